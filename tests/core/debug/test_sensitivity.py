"""sensitivity(): one unit quantized at a time, ranked by the damage it does to the output."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import (
    DerivedQuantizationSpec,
    QuantizationAnnotation,
    Quantizer,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.contract.annotation import get_annotation, set_annotation
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.sensitivity import (
    LayerSensitivity,
    SensitivityRanking,
    sensitivity,
    single_layer_quantizer,
)
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.models import ZOO
from tests.models.seed_models import ConvMaxPool2d

aten = torch.ops.aten


class BadlyScaledMLP(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> fc3, with fc2 badly scaled for per-tensor weights.

    fc1's output feature 5 is dead (zero weights and bias, so relu gives exactly 0), and fc2
    reads it with weights of 100: the float function ignores them, but per-tensor int8 weight
    quantization of fc2 gets a scale of 100/127 and rounds every other fc2 weight to zero.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)
        with torch.no_grad():
            self.fc1.weight[5] = 0.0
            self.fc1.bias[5] = 0.0
            self.fc2.weight[:, 5] = 100.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _batches(n: int = 3) -> list[tuple[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 8, generator=generator),) for _ in range(n)]


def _per_tensor() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))


@pytest.fixture(scope="module")
def mlp_ep() -> torch.export.ExportedProgram:
    ep = torch.export.export(BadlyScaledMLP().eval(), _batches(1)[0])
    generate_numeric_debug_handle(ep)
    return ep


@pytest.fixture(scope="module")
def mlp_ranking(mlp_ep) -> SensitivityRanking:
    return sensitivity(mlp_ep, _per_tensor(), _batches(), progress=False)


# ------------------------------------------------------------------------ ranking


def test_badly_scaled_layer_ranks_first(mlp_ranking):
    assert sorted(row.module_path for row in mlp_ranking) == ["fc1", "fc2", "fc3"]
    worst = mlp_ranking[0]
    assert worst.node_names == ("linear_1", "relu_1")  # the fused linear -> relu unit
    assert worst.metric == "sqnr" and worst.value < 15.0
    assert all(row.value > 30.0 for row in mlp_ranking[1:])
    assert [row.damage for row in mlp_ranking] == sorted(
        (row.damage for row in mlp_ranking), reverse=True
    )
    assert all(row.damage == -row.value and not row.failed for row in mlp_ranking)


def test_rows_carry_the_handle_of_the_unit_output(mlp_ep, mlp_ranking):
    handles = {n.name: get_debug_handle(n) for n in mlp_ep.graph.nodes}
    for row in mlp_ranking:
        assert row.handle is not None
        assert row.handle == handles[row.node_names[-1]]


def test_graph_module_input_gives_the_same_ranking(mlp_ep, mlp_ranking):
    ranking = sensitivity(mlp_ep.module(), _per_tensor(), iter(_batches()), progress=False)
    assert [(r.node_names, r.value) for r in ranking] == [
        (r.node_names, r.value) for r in mlp_ranking
    ]


def test_to_text_lists_the_ranking(mlp_ranking):
    text = mlp_ranking.to_text()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["rank", "metric", "module"]
    assert lines[1].split()[:5] == ["1", "SQNR", f"{mlp_ranking[0].value:.1f}", "dB", "fc2"]
    assert len(mlp_ranking.to_text(top=1).splitlines()) == 2


def test_progress_bar_can_be_shown(mlp_ep, capsys):
    sensitivity(mlp_ep, _per_tensor(), _batches(1), progress=True)
    assert "sensitivity" in capsys.readouterr().err


# ------------------------------------------------------------------------ metrics


def test_mse_metric_ranks_by_larger_error(mlp_ep):
    ranking = sensitivity(mlp_ep, _per_tensor(), _batches(), metric="mse", progress=False)
    assert ranking[0].module_path == "fc2" and ranking[0].metric == "mse"
    values = [row.value for row in ranking]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    assert [row.damage for row in ranking] == values
    assert ranking.to_text().splitlines()[1].split()[1] == "MSE"


def test_callable_metric_larger_means_more_damage(mlp_ep):
    calls = []

    def max_abs_error(ref: torch.Tensor, out: torch.Tensor) -> float:
        calls.append(ref.shape)
        return float((ref - out).abs().max())

    ranking = sensitivity(mlp_ep, _per_tensor(), _batches(), metric=max_abs_error, progress=False)
    assert len(calls) == 3 * len(ranking)  # once per evaluation batch and unit
    assert ranking[0].module_path == "fc2" and ranking[0].metric == "max_abs_error"

    def closeness(ref: torch.Tensor, out: torch.Tensor) -> float:  # wrong direction on purpose
        return -float((ref - out).abs().max())

    reversed_ranking = sensitivity(mlp_ep, _per_tensor(), _batches(), closeness, progress=False)
    assert reversed_ranking[-1].module_path == "fc2"


def test_unknown_metric_is_rejected(mlp_ep):
    with pytest.raises(ValueError, match="metric must be 'sqnr', 'mse' or a callable"):
        sensitivity(mlp_ep, _per_tensor(), _batches(), metric="psnr", progress=False)


# -------------------------------------------------------------------------- units


def _anchors(prepared: GraphModule) -> list[Node]:
    """XNNPACK's pattern anchors: annotated nodes quantizing at least one input edge (a fused
    relu carries only the output spec)."""
    return [
        n
        for n in prepared.graph.nodes
        if get_annotation(n) is not None
        and any(spec is not None for spec in get_annotation(n).input_qspec_map.values())
    ]


def test_one_unit_per_annotated_pattern_on_a_zoo_model():
    model = ZOO["mobilenet_v2_block"]().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    quantizer = _per_tensor()
    anchors = _anchors(prepare_pt2e(gm, quantizer))
    ranking = sensitivity(gm, quantizer, [inputs], progress=False)
    assert len(ranking) == len(anchors) > 3
    assert sorted(row.node_names[0] for row in ranking) == sorted(a.name for a in anchors)
    by_first = {row.node_names[0]: row.node_names for row in ranking}
    for anchor in anchors:  # a conv fused with its relu / hardtanh is one unit
        if get_annotation(anchor).output_qspec is None:
            assert len(by_first[anchor.name]) == 2
            assert by_first[anchor.name][1] in {u.name for u in anchor.users}
    assert not ranking.failed


def test_x86_conv_add_relu_fusion_is_one_unit():
    model = ZOO["resnet_basic_block"]().eval()
    inputs = model.example_inputs()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    ranking = sensitivity(torch.export.export(model, inputs), quantizer, [inputs], progress=False)
    gm = torch.export.export(model, inputs).module()
    targets = {n.name: n.target for n in gm.graph.nodes}
    units = sorted(
        [targets[name].__name__.split(".")[0] for name in row.node_names] for row in ranking
    )
    assert units == [["conv2d", "add_", "relu_"], ["conv2d", "relu_"]]
    assert not ranking.failed


def _qdq(model: GraphModule) -> tuple[list[Node], list[Node]]:
    nodes = list(model.graph.nodes)
    return [n for n in nodes if is_quantize(n)], [n for n in nodes if is_dequantize(n)]


def test_everything_outside_the_unit_stays_float(mlp_ep, mlp_ranking):
    gm = mlp_ep.module()
    for row in mlp_ranking:
        prepared = prepare_pt2e(gm, single_layer_quantizer(_per_tensor(), row))
        for batch in _batches():
            prepared(*batch)
        quantizes, dequantizes = _qdq(convert_pt2e(prepared))
        # input activation and unit output quantized; weight folded to int8 (dq only)
        assert len(quantizes) == 2 and len(dequantizes) == 3
        nodes = {n.name: n for n in gm.graph.nodes}
        anchor, end = nodes[row.node_names[0]], nodes[row.node_names[-1]]
        assert {q.args[0].name for q in quantizes} == {anchor.args[0].name, end.name}
        consumers = {u.name for dq in dequantizes for u in dq.users}
        assert consumers == {anchor.name} | {u.name for u in end.users}


def test_shared_spec_pointing_outside_the_unit_is_taken_over():
    model = ConvMaxPool2d().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    quantizer = _per_tensor()
    ranking = sensitivity(gm, quantizer, [inputs], progress=False)
    pool = next(row for row in ranking if row.node_names == ("max_pool2d",))
    assert not pool.failed and math.isfinite(pool.value) and pool.notes == ()
    prepared = prepare_pt2e(gm, single_layer_quantizer(quantizer, pool))
    prepared(*inputs)
    quantizes, dequantizes = _qdq(convert_pt2e(prepared))
    assert [q.args[0].name for q in quantizes] == ["conv2d", "max_pool2d"]
    assert len(dequantizes) == 2
    # the pool still shares one observer between its input and its output
    assert quantizes[0].args[1:] == quantizes[1].args[1:]


class _DerivedFromProducer(Quantizer):
    """Quantizes linear (input, weight, output) and derives add's first input from linear's
    output: a derived spec whose source lies in another unit."""

    def annotate(self, model: GraphModule) -> GraphModule:
        act = get_symmetric_quantization_config().input_activation
        weight = get_symmetric_quantization_config().weight
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                set_annotation(
                    node,
                    QuantizationAnnotation({node.args[0]: act, node.args[1]: weight}, act),
                )
            elif node.target == aten.add.Tensor:
                derived = DerivedQuantizationSpec(
                    derived_from=[node.args[0]],
                    derive_qparams_fn=lambda obs: obs[0].calculate_qparams(),
                    dtype=torch.int8,
                    quant_min=-128,
                    quant_max=127,
                    qscheme=torch.per_tensor_affine,
                )
                set_annotation(
                    node, QuantizationAnnotation({node.args[0]: derived, node.args[1]: act}, act)
                )
        return model

    def validate(self, model: GraphModule) -> None:
        return None


class LinearAdd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + x


def test_derived_spec_with_sources_outside_the_unit_is_dropped_with_a_note():
    inputs = _batches(1)[0]
    ep = torch.export.export(LinearAdd().eval(), inputs)
    ranking = sensitivity(ep, _DerivedFromProducer(), [inputs], progress=False)
    assert sorted(row.node_names for row in ranking) == [("add",), ("linear",)]
    add = next(row for row in ranking if row.node_names == ("add",))
    assert not add.failed
    assert add.notes == (
        "derived spec of the edge 'linear' -> 'add' left float: its sources are outside",
    )
    prepared = prepare_pt2e(ep.module(), single_layer_quantizer(_DerivedFromProducer(), add))
    prepared(*inputs)
    quantizes, _ = _qdq(convert_pt2e(prepared))
    assert sorted(q.args[0].name for q in quantizes) == ["add", "x"]


# ------------------------------------------------------------------------- errors


def test_empty_calibration_data_names_the_argument(mlp_ep):
    with pytest.raises(ValueError, match="calibration_data is empty"):
        sensitivity(mlp_ep, _per_tensor(), [], progress=False)
    with pytest.raises(ValueError, match="eval_data is empty"):
        sensitivity(mlp_ep, _per_tensor(), _batches(), eval_data=iter([]), progress=False)


def test_dataloader_style_list_batches_are_positional_inputs(mlp_ep, mlp_ranking):
    """A DataLoader's default collate yields lists: read like quantize()'s calibration."""
    as_lists = [list(batch) for batch in _batches()]
    ranking = sensitivity(mlp_ep, _per_tensor(), as_lists, progress=False)
    assert [row.value for row in ranking] == [row.value for row in mlp_ranking]


def test_a_quantizer_that_annotates_nothing_warns_and_returns_no_rows(mlp_ep):
    quantizer = XNNPACKQuantizer()  # no config set: nothing is quantized
    with pytest.warns(UserWarning, match="XNNPACKQuantizer annotated nothing"):
        ranking = sensitivity(mlp_ep, quantizer, _batches(), progress=False)
    assert ranking == [] and isinstance(ranking, SensitivityRanking)


class _BrokenOnFc3(XNNPACKQuantizer):
    """XNNPACK, except that fc3's annotation keys an input that is not an input of fc3."""

    def annotate(self, model: GraphModule) -> GraphModule:
        super().annotate(model)
        linears = [n for n in model.graph.nodes if n.target == aten.linear.default]
        annotation = get_annotation(linears[-1])
        if annotation is not None:
            annotation.input_qspec_map[linears[0]] = annotation.input_qspec_map.popitem()[1]
        return model


def test_a_failing_unit_is_recorded_not_raised(mlp_ep):
    quantizer = _BrokenOnFc3().set_global(get_symmetric_quantization_config())
    ranking = sensitivity(mlp_ep, quantizer, _batches(), progress=False)
    assert [row.module_path for row in ranking] == ["fc2", "fc1", "fc3"]
    broken = ranking[-1]
    assert ranking.failed == [broken] and broken.value is None and broken.damage is None
    assert broken.error.startswith("AnnotationError: The annotation of")
    assert "is not an input of 'linear_2'" in broken.error
    assert "failed" in ranking.to_text().splitlines()[3]


def test_units_calibration_never_reaches_are_noted():
    from tests.models import CondLinear

    model = CondLinear().eval()
    inputs = model.example_inputs()
    ranking = sensitivity(
        torch.export.export(model, inputs), _per_tensor(), [inputs], progress=False
    )
    assert {row.graph for row in ranking} == {"true_graph_0", "false_graph_0"}
    untaken = [row for row in ranking if row.value == math.inf]
    assert len(untaken) == 1 and "never saw data" in untaken[0].notes[0]


def test_rows_are_frozen_values():
    row = LayerSensitivity("fc", ("linear",), None, "sqnr", 20.0, -20.0)
    with pytest.raises(AttributeError):
        row.value = 1.0  # type: ignore[misc]
    assert row.describe_value() == "SQNR 20.0 dB" and not row.failed


class _PoolSharingWithConvTwice(Quantizer):
    """conv quantized (input, weight, output); max-pool's input edge AND output both share
    with the conv's output, so two unit members point at the same target outside the unit."""

    def annotate(self, model: GraphModule) -> GraphModule:
        config = get_symmetric_quantization_config()
        for node in model.graph.nodes:
            if node.target == aten.conv2d.default:
                specs = {node.args[0]: config.input_activation, node.args[1]: config.weight}
                set_annotation(node, QuantizationAnnotation(specs, config.output_activation))
            elif node.target == aten.max_pool2d.default:
                conv = node.args[0]
                shared = SharedQuantizationSpec(conv)
                set_annotation(node, QuantizationAnnotation({conv: shared}, shared))
        return model

    def validate(self, model: GraphModule) -> None:
        return None


class ConvThenPool2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(self.conv(x), 2)


def test_two_members_sharing_one_outside_target_keep_sharing_each_other():
    """The pool's input edge takes over the conv output's spec; its output, pointing at the
    same conv output, must share with that edge (as in the full model: one scale in and out),
    not get an observer of its own (a 2x2 max-pool's output has a narrower range)."""
    torch.manual_seed(0)
    model = ConvThenPool2().eval()
    inputs = (torch.randn(1, 2, 6, 6),)
    gm = torch.export.export(model, inputs).module()
    ranking = sensitivity(gm, _PoolSharingWithConvTwice(), [inputs], progress=False)
    pool = next(row for row in ranking if row.node_names == ("max_pool2d",))
    assert not pool.failed and pool.notes == ()
    prepared = prepare_pt2e(gm, single_layer_quantizer(_PoolSharingWithConvTwice(), pool))
    prepared(*inputs)
    quantizes, _ = _qdq(convert_pt2e(prepared))
    assert [q.args[0].name for q in quantizes] == ["conv2d", "max_pool2d"]
    assert quantizes[0].args[1:] == quantizes[1].args[1:]
