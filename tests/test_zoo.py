"""Tests for the shared test infrastructure: the model zoo and the graph checker.

Other tests assert exact q/dq counts on these models, so here we pin down that every model
runs eagerly, exports (non-strict and strict) to a graph that computes the same thing, and
that the seed models export to the exact op sequences those counts were derived from.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from tests.graph_check import (
    assert_graph,
    assert_node_occurrence,
    assert_node_order,
    count_ops,
    ops_in_order,
)
from tests.models import (
    ZOO,
    CondLinear,
    ControlFlow,
    Conv2dThenConv1d,
    Conv2dWithCat,
    Conv2dWithSplit,
    Conv2dWithTwoCat,
    ConvLinearWPermute,
    ConvMaxPool2d,
    ConvTWithBNRelu,
    ConvWithBNRelu,
    EmbeddingConvLinearModule,
    EmbeddingModule,
    GroupwiseConv2d,
    NoGradLinear,
    ResNetBasicBlock,
    ScanLinear,
    SigmoidAddModel,
    SigmoidModel,
    ThreeAdd,
    TwoLinearModule,
    WhileLinear,
    export_model,
)

aten = torch.ops.aten
higher_order = torch.ops.higher_order

# Known, harmless warnings from torch itself: nn.LSTM re-assigns its flat weight list while
# tracing, scan's eager path wraps the body in torch.compile (ignored under export), and
# tracing scan touches a deprecated torch.jit decorator.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm._flat_weights"),
    pytest.mark.filterwarnings("ignore:torch.compile is ignored when called inside"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]

# Seed models with the op sequence each exports to (top-level graph, non-strict and strict
# agree). Tests in tests/core derive their q/dq counts from exactly these graphs.
SEED_GRAPHS: dict[str, tuple[Callable[[], nn.Module], list]] = {
    "conv_bn_relu_2d": (
        lambda: ConvWithBNRelu(relu=True),
        [aten.conv2d.default, aten.batch_norm.default, aten.relu.default],
    ),
    "conv_1d_bn": (
        lambda: ConvWithBNRelu(relu=False, dim=1),
        [aten.conv1d.default, aten.batch_norm.default],
    ),
    "conv_3d_relu_nobias_pad": (
        lambda: ConvWithBNRelu(relu=True, dim=3, bn=False, bias=False, padding=1),
        [aten.conv3d.default, aten.relu.default],
    ),
    "conv_only": (lambda: ConvWithBNRelu(relu=False, bn=False), [aten.conv2d.default]),
    "convt_bn_relu_2d": (
        ConvTWithBNRelu,
        [aten.conv_transpose2d.input, aten.batch_norm.default, aten.relu.default],
    ),
    "convt_1d": (
        lambda: ConvTWithBNRelu(dim=1, bn=False, relu=False),
        [aten.conv_transpose1d.default],
    ),
    "conv_maxpool": (ConvMaxPool2d, [aten.conv2d.default, aten.max_pool2d.default]),
    "conv_cat": (Conv2dWithCat, [aten.conv2d.default, aten.conv2d.default, aten.cat.default]),
    "conv_two_cat": (
        Conv2dWithTwoCat,
        [
            aten.conv2d.default,
            aten.conv2d.default,
            aten.cat.default,
            aten.add.Tensor,
            aten.cat.default,
        ],
    ),
    "three_add": (ThreeAdd, [aten.add.Tensor] * 3),
    "conv2d_conv1d": (
        Conv2dThenConv1d,
        [aten.conv2d.default, aten.squeeze.dim, aten.conv1d.default],
    ),
    "conv_split": (
        Conv2dWithSplit,
        [
            aten.conv2d.default,
            aten.split.Tensor,
            operator.getitem,
            operator.getitem,
            aten.cat.default,
        ],
    ),
    "two_linear": (TwoLinearModule, [aten.linear.default, aten.linear.default]),
    "control_flow": (ControlFlow, [aten.matmul.default, higher_order.map_impl, operator.getitem]),
    "sigmoid": (SigmoidModel, [aten.sigmoid.default]),
    "sigmoid_add": (SigmoidAddModel, [aten.sigmoid.default, aten.add.Tensor]),
    "embedding": (EmbeddingModule, [aten.embedding.default]),
    "embedding_conv_linear": (
        EmbeddingConvLinearModule,
        [
            aten.embedding.default,
            aten.unsqueeze.default,
            aten.permute.default,
            aten.conv2d.default,
            aten.permute.default,
            aten.squeeze.dim,
            aten.linear.default,
        ],
    ),
    "conv_linear_permute": (
        ConvLinearWPermute,
        [aten.conv2d.default, aten.permute.default, aten.linear.default],
    ),
    "groupwise_conv": (GroupwiseConv2d, [aten.conv2d.default]),
}

# Control-flow models and the higher-order op each must export to.
CONTROL_FLOW: dict[str, tuple[Callable[[], nn.Module], object]] = {
    "no_grad_linear": (NoGradLinear, higher_order.wrap_with_set_grad_enabled),
    "cond_linear": (CondLinear, higher_order.cond),
    "scan_linear": (ScanLinear, higher_order.scan),
    "while_linear": (WhileLinear, higher_order.while_loop),
}

ALL_MODELS: dict[str, Callable[[], nn.Module]] = {
    **{name: factory for name, (factory, _) in SEED_GRAPHS.items()},
    **{name: factory for name, (factory, _) in CONTROL_FLOW.items()},
    **ZOO,
}

# Models that cannot be exported with strict=True on torch 2.13, with the reason. Empty today:
# every model (including the map/cond/scan/while_loop ones) exports strictly and produces the
# same op sequence as non-strict export. Entries here run as strict xfails, so a model that
# starts exporting again is noticed.
STRICT_EXPORT_FAILURES: dict[str, str] = {}


def _flat(out: object) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_leaves(out)


def _assert_export_matches_eager(name: str, strict: bool) -> GraphModule:
    torch.manual_seed(0)
    model = ALL_MODELS[name]().eval()
    inputs = model.example_inputs()
    with torch.no_grad():
        expected = model(*inputs)
    exported = export_model(model, inputs, strict=strict)
    with torch.no_grad():
        actual = exported(*inputs)
    for want, got in zip(_flat(expected), _flat(actual), strict=True):
        torch.testing.assert_close(got, want)
    return exported


# ------------------------------------------------------------------------------ the zoo


@pytest.mark.parametrize("name", sorted(ALL_MODELS))
def test_model_runs_and_exports_non_strict(name: str) -> None:
    """Default (non-strict) export is what the library's users and our tests do."""
    _assert_export_matches_eager(name, strict=False)


def _strict_params() -> list:
    params = []
    for name in sorted(ALL_MODELS):
        marks = [pytest.mark.slow]
        if name in STRICT_EXPORT_FAILURES:
            marks.append(pytest.mark.xfail(reason=STRICT_EXPORT_FAILURES[name], strict=True))
        params.append(pytest.param(name, marks=marks))
    return params


@pytest.mark.parametrize("name", _strict_params())
def test_model_exports_strict(name: str) -> None:
    """Strict (Dynamo) export must work too and give the same graph as non-strict."""
    strict_graph = _assert_export_matches_eager(name, strict=True)
    non_strict_graph = export_model(ALL_MODELS[name](), strict=False)
    assert ops_in_order(strict_graph) == ops_in_order(non_strict_graph)


@pytest.mark.parametrize("name", sorted(SEED_GRAPHS))
def test_seed_model_exports_to_expected_ops(name: str) -> None:
    """The op sequence tests in tests/core rely on; a torch upgrade changing it shows here."""
    factory, expected = SEED_GRAPHS[name]
    assert ops_in_order(export_model(factory())) == expected


def test_conv2d_then_conv1d_exports_exactly_three_ops() -> None:
    gm = export_model(Conv2dThenConv1d())
    assert ops_in_order(gm) == [aten.conv2d.default, aten.squeeze.dim, aten.conv1d.default]


@pytest.mark.parametrize("name", sorted(CONTROL_FLOW))
def test_control_flow_model_exports_to_higher_order_op(name: str) -> None:
    """The linear must sit inside the higher-order op's body, not in the top-level graph."""
    factory, hop = CONTROL_FLOW[name]
    gm = export_model(factory())
    assert_node_occurrence(gm, {hop: 1, aten.linear.default: 0})
    assert count_ops(gm, include_subgraphs=True)[aten.linear.default] >= 1


def test_control_flow_seed_nests_cond_inside_map() -> None:
    gm = export_model(ControlFlow())
    assert_node_occurrence(
        gm,
        {higher_order.map_impl: 1, higher_order.cond: 2, aten.matmul.default: 3},
        include_subgraphs=True,
    )


def test_resnet_block_keeps_inplace_ops() -> None:
    """The zoo's ResNet block exists to exercise in-place relu_/add_ in the exported graph."""
    gm = export_model(ResNetBasicBlock())
    assert_node_occurrence(gm, {aten.relu_.default: 2, aten.add_.Tensor: 1, aten.relu.default: 0})


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_factories_give_fresh_models_and_stable_input_shapes(name: str) -> None:
    first, second = ZOO[name](), ZOO[name]()
    assert first is not second
    shapes = [t.shape for t in first.example_inputs()]
    assert shapes == [t.shape for t in second.example_inputs()]


def test_export_model_uses_eval_mode_and_default_inputs() -> None:
    model = ConvWithBNRelu(relu=True).train()
    gm = export_model(model)
    assert isinstance(gm, GraphModule) and not model.training


# ------------------------------------------------------------------------- the checker


class _WithModuleAndMethod(nn.Module):
    """A symbolically traced graph has call_module and call_method nodes (export has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ReLU()
        self.second = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x).add(1))


@pytest.fixture
def two_linear() -> GraphModule:
    return export_model(TwoLinearModule())


def test_count_ops_keys_by_target(two_linear: GraphModule) -> None:
    assert count_ops(two_linear) == {aten.linear.default: 2}


def test_count_ops_accepts_exported_program() -> None:
    model = TwoLinearModule()
    program = torch.export.export(model, model.example_inputs())
    assert count_ops(program) == {aten.linear.default: 2}


def test_count_ops_module_types_or_targets() -> None:
    traced = torch.fx.symbolic_trace(_WithModuleAndMethod())
    assert count_ops(traced) == {nn.ReLU: 2, "add": 1}
    assert count_ops(traced, module_types=False) == {"first": 1, "second": 1, "add": 1}


def test_count_ops_include_subgraphs() -> None:
    gm = export_model(CondLinear())
    assert count_ops(gm)[aten.linear.default] == 0
    assert count_ops(gm, include_subgraphs=True)[aten.linear.default] == 2


def test_occurrence_passes_on_correct_counts(two_linear: GraphModule) -> None:
    assert_node_occurrence(two_linear, {aten.linear.default: 2, aten.conv2d.default: 0})


def test_occurrence_key_kinds() -> None:
    """Packets, printed names, module types and method names all work as keys."""
    assert_node_occurrence(export_model(ThreeAdd()), {aten.add: 3, "aten.add.Tensor": 3})
    traced = torch.fx.symbolic_trace(_WithModuleAndMethod())
    assert_node_occurrence(traced, {nn.ReLU: 2, "first": 1, "add": 1, nn.Conv2d: 0})


def test_occurrence_count_mismatch_lists_every_key_and_the_graph(two_linear) -> None:
    with pytest.raises(AssertionError) as failure:
        assert_node_occurrence(two_linear, {aten.linear.default: 3, aten.relu.default: 0})
    message = str(failure.value)
    assert "aten.linear.default: expected 3, got 2" in message
    assert "aten.relu.default: expected 0, got 0" in message
    assert "torch.ops.aten.linear.default(" in message  # the graph is printed


def test_occurrence_missing_op(two_linear: GraphModule) -> None:
    with pytest.raises(AssertionError, match=r"aten.conv2d.default: expected 1, got 0"):
        assert_node_occurrence(two_linear, {aten.conv2d.default: 1})


def test_occurrence_zero_means_absent(two_linear: GraphModule) -> None:
    with pytest.raises(AssertionError, match=r"aten.linear.default: expected 0, got 2"):
        assert_node_occurrence(two_linear, {aten.linear.default: 0})


def test_order_passes_on_subsequence() -> None:
    gm = export_model(Conv2dWithTwoCat())
    assert_node_order(gm, [aten.conv2d.default, aten.cat.default, aten.cat.default])
    assert_node_order(gm, [aten.conv2d.default, aten.add.Tensor])
    assert_node_order(gm, [])


def test_order_wrong_order_reports_where_matching_stopped() -> None:
    gm = export_model(Conv2dThenConv1d())
    with pytest.raises(AssertionError) as failure:
        assert_node_order(gm, [aten.conv1d.default, aten.conv2d.default])
    message = str(failure.value)
    assert "expected op #1 aten.conv2d.default not found after node 'conv1d'" in message
    assert "conv2d: aten.conv2d.default" in message  # the op sequence is shown
    assert "squeeze: aten.squeeze.dim" in message


def test_order_missing_op() -> None:
    gm = export_model(Conv2dThenConv1d())
    with pytest.raises(AssertionError, match="#0 aten.linear.default not found anywhere"):
        assert_node_order(gm, [aten.linear.default])


def test_order_needs_repeated_ops_to_repeat() -> None:
    gm = export_model(Conv2dWithCat())
    with pytest.raises(AssertionError, match="#2 aten.conv2d.default"):
        assert_node_order(gm, [aten.conv2d.default, aten.conv2d.default, aten.conv2d.default])


def test_order_matches_module_types_and_method_names() -> None:
    traced = torch.fx.symbolic_trace(_WithModuleAndMethod())
    assert_node_order(traced, [nn.ReLU, "add", "second"])
    with pytest.raises(AssertionError, match="not found after node 'add'"):
        assert_node_order(traced, ["add", "first"])


def test_assert_graph_runs_both_checks(two_linear: GraphModule) -> None:
    assert_graph(two_linear, occurrence={aten.linear.default: 2}, order=[aten.linear.default])
    with pytest.raises(AssertionError, match="node order mismatch"):
        assert_graph(two_linear, occurrence={aten.linear.default: 2}, order=[aten.relu.default])


def test_checker_rejects_non_graphs() -> None:
    with pytest.raises(TypeError, match="GraphModule or ExportedProgram"):
        count_ops(TwoLinearModule())  # type: ignore[arg-type]
