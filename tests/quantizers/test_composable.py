"""ComposableQuantizer: order of transforms and annotations, and the overwrite check."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.fx import GraphModule

import pt2e_quant.observer as ours
from pt2e_quant import AnnotationError, Quantizer, convert_pt2e, prepare_pt2e
from pt2e_quant.contract.annotation import (
    QuantizationAnnotation,
    annotate_input,
    annotate_output,
    get_annotation,
    is_annotated,
    set_annotation,
)
from pt2e_quant.ops import qdq_ops
from quantizers.composable import AnnotationOverwriteError, ComposableQuantizer
from quantizers.embedding.quantizer import EmbeddingQuantizer
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.graph_check import assert_node_occurrence, assert_node_order
from tests.models import ConvLinearWPermute, EmbeddingConvLinearModule, export_model

aten = torch.ops.aten
CONV = (aten.conv2d.default,)
LINEAR = (aten.linear.default,)


class Claiming(Quantizer):
    """Quantizes ``targets`` like XNNPACK (activation in/out, weight) unless already claimed."""

    def __init__(self, targets, dynamic: bool = False, per_channel: bool = True) -> None:
        self.targets = targets
        self.activation, self.weight = int8_specs(ours, dynamic, per_channel)

    def annotate(self, model: GraphModule) -> GraphModule:
        for node in model.graph.nodes:
            if node.target not in self.targets or is_annotated(node):
                continue
            x, w = node.args[0], node.args[1]
            output = None if self.activation.is_dynamic else self.activation
            annotation = QuantizationAnnotation({x: self.activation, w: self.weight}, output)
            annotation._annotated = True
            set_annotation(node, annotation)
        return model

    def validate(self, model: GraphModule) -> None:
        return None


def _quantize(model: torch.nn.Module, quantizer: Quantizer) -> GraphModule:
    torch.manual_seed(0)
    inputs = model.example_inputs()
    prepared = prepare_pt2e(export_model(model), quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def _counts(**counts: int) -> dict:
    names = {
        "q": qdq_ops.QUANTIZE_PER_TENSOR,
        "dq": qdq_ops.DEQUANTIZE_PER_TENSOR,
        "q_tensor": qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC,
        "dq_tensor": qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC,
        "q_channel": qdq_ops.QUANTIZE_PER_CHANNEL,
        "dq_channel": qdq_ops.DEQUANTIZE_PER_CHANNEL,
    }
    return {names[key]: value for key, value in counts.items()}


# ------------------------------------------------------------------------- composition


def test_dynamic_first_claims_linear() -> None:
    """[dynamic linear, static conv/linear]: the linear stays dynamic, the conv is static."""
    quantizer = ComposableQuantizer(
        [Claiming(LINEAR, dynamic=True, per_channel=False), Claiming(CONV + LINEAR)]
    )
    converted = _quantize(ConvLinearWPermute(), quantizer)
    expected = _counts(q=2, dq=3, q_tensor=1, dq_tensor=1, q_channel=0, dq_channel=1)
    assert_node_occurrence(converted, expected)
    assert_node_order(
        converted,
        [
            qdq_ops.DEQUANTIZE_PER_CHANNEL,  # conv weight, static per-channel
            aten.conv2d.default,
            qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC,  # linear input, dynamic
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC,
            aten.linear.default,
        ],
    )


def test_order_matters_static_first_claims_everything() -> None:
    quantizer = ComposableQuantizer(
        [Claiming(CONV + LINEAR), Claiming(LINEAR, dynamic=True, per_channel=False)]
    )
    converted = _quantize(ConvLinearWPermute(), quantizer)
    expected = _counts(q=4, dq=4, q_tensor=0, dq_tensor=0, q_channel=0, dq_channel=2)
    assert_node_occurrence(converted, expected)


def test_embedding_then_conv_linear_on_embedding_conv_linear_module() -> None:
    quantizer = ComposableQuantizer(
        [EmbeddingQuantizer(), Claiming(LINEAR, dynamic=True), Claiming(CONV + LINEAR)]
    )
    model = EmbeddingConvLinearModule()
    converted = _quantize(model, quantizer)
    # embedding table, dynamic linear weight, static conv weight: all per channel
    expected = _counts(q=2, dq=2, q_tensor=1, dq_tensor=1, q_channel=0, dq_channel=3)
    assert_node_occurrence(converted, expected)
    assert_node_order(
        converted,
        [
            qdq_ops.DEQUANTIZE_PER_CHANNEL,
            aten.embedding.default,
            qdq_ops.QUANTIZE_PER_TENSOR,
            qdq_ops.DEQUANTIZE_PER_TENSOR,
            aten.conv2d.default,
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC,
            aten.linear.default,
        ],
    )
    (indices,) = model.example_inputs()
    with torch.no_grad():
        error = (converted(indices) - model(indices)).abs().max()
    assert 0 < error < 0.1


def test_single_quantizer_composition_equals_the_quantizer() -> None:
    torch.manual_seed(0)
    model = ConvLinearWPermute().eval()
    inputs = model.example_inputs()
    results = []
    for quantizer in (Claiming(CONV + LINEAR), ComposableQuantizer([Claiming(CONV + LINEAR)])):
        prepared = prepare_pt2e(export_model(copy.deepcopy(model), inputs), quantizer)
        prepared(*inputs)
        results.append(convert_pt2e(prepared)(*inputs))
    assert torch.equal(results[0], results[1])


# ------------------------------------------------------------------ transform_for_annotation


class Rewrite(Quantizer):
    """transform_for_annotation retargets ``old`` calls to ``new`` and returns a new copy."""

    def __init__(self, old, new, seen: list) -> None:
        self.old, self.new, self.seen = old, new, seen

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        self.seen.append(model)
        model = GraphModule(model, copy.deepcopy(model.graph))
        for node in model.graph.nodes:
            if node.target == self.old:
                node.target = self.new
        model.recompile()
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        return model

    def validate(self, model: GraphModule) -> None:
        return None


class AddSub(torch.nn.Module):
    def forward(self, x, y):
        return (x + y) - y


def test_transforms_of_all_quantizers_are_applied_in_order() -> None:
    seen: list = []
    first = Rewrite(aten.add.Tensor, aten.mul.Tensor, seen)
    second = Rewrite(aten.sub.Tensor, aten.div.Tensor, seen)
    inputs = (torch.randn(2, 2), torch.randn(2, 2) + 3)
    gm = export_model(AddSub(), inputs)
    prepared = prepare_pt2e(gm, ComposableQuantizer([first, second]))
    assert_node_occurrence(
        prepared,
        {aten.add.Tensor: 0, aten.sub.Tensor: 0, aten.mul.Tensor: 1, aten.div.Tensor: 1},
    )
    # the second transform received the first one's result, not the original
    assert len(seen) == 2 and seen[1] is not seen[0]
    assert_node_occurrence(seen[1], {aten.add.Tensor: 0, aten.mul.Tensor: 1})
    x, y = inputs
    assert torch.allclose(prepared(x, y), (x * y) / y)


# ------------------------------------------------------------------------ overwrite check


def _annotate_linear_dynamic_then(second: Quantizer) -> None:
    composed = ComposableQuantizer([Claiming(LINEAR, dynamic=True), second])
    prepare_pt2e(export_model(ConvLinearWPermute()), composed)


def test_setting_annotation_to_none_raises() -> None:
    def drop_all(model: GraphModule) -> None:
        for node in model.graph.nodes:
            set_annotation(node, None)

    with pytest.raises(RuntimeError, match="removed it"):
        _annotate_linear_dynamic_then(FunctionQuantizer(drop_all))


def test_overwrite_error_names_node_and_both_quantizers() -> None:
    activation, weight = int8_specs(ours)
    with pytest.raises(AnnotationOverwriteError) as caught:
        _annotate_linear_dynamic_then(ConvLinearQuantizer(activation, weight))
    message = str(caught.value)
    assert "quantizer #1 (ConvLinearQuantizer) replaced it" in message
    assert "'linear' (call_function aten.linear.default)" in message
    assert "quantizer #0 (Claiming) had annotated" in message
    assert ">> " in message  # graph context
    assert isinstance(caught.value, AnnotationError)


@pytest.mark.parametrize(
    ("mutate", "what"),
    [
        (lambda node: annotate_output(node, int8_specs(ours)[0]), "changed its output_qspec"),
        (lambda node: annotate_input(node, node.args[2], None), "changed its input_qspec_map"),
        (
            lambda node: annotate_input(node, node.args[0], int8_specs(ours)[0]),
            "changed its input_qspec_map",
        ),
        (lambda node: setattr(get_annotation(node), "_annotated", False), "_annotated flag"),
        (
            lambda node: setattr(get_annotation(node), "allow_implicit_sharing", False),
            "allow_implicit_sharing",
        ),
    ],
    ids=["output", "new_input", "input_spec", "annotated", "sharing"],
)
def test_in_place_change_of_earlier_annotation_raises(mutate, what) -> None:
    def mutate_linear(model: GraphModule) -> None:
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                mutate(node)

    with pytest.raises(AnnotationOverwriteError, match=what):
        _annotate_linear_dynamic_then(FunctionQuantizer(mutate_linear))


def test_restating_the_same_spec_is_not_a_change() -> None:
    def restate(model: GraphModule) -> None:
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                x = node.args[0]
                annotate_input(node, x, get_annotation(node).input_qspec_map[x])

    # fails (raises) if the check flags an unchanged annotation
    _annotate_linear_dynamic_then(FunctionQuantizer(restate))


def test_annotation_present_before_composition_is_protected() -> None:
    gm = export_model(ConvLinearWPermute())
    (linear,) = [n for n in gm.graph.nodes if n.target == aten.linear.default]
    annotate_output(linear, int8_specs(ours)[0])
    activation, weight = int8_specs(ours)
    with pytest.raises(AnnotationOverwriteError, match="present before ComposableQuantizer"):
        ComposableQuantizer([ConvLinearQuantizer(activation, weight)]).annotate(gm)


# ---------------------------------------------------------------- validate and callbacks


class Recording(Quantizer):
    def __init__(self, name: str, log: list, fail: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail

    def annotate(self, model: GraphModule) -> GraphModule:
        self.log.append(("annotate", self.name))
        return model

    def validate(self, model: GraphModule) -> None:
        self.log.append(("validate", self.name))
        if self.fail:
            raise AnnotationError(f"{self.name} rejects")

    def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq) -> None:
        self.log.append(("callback", self.name))


def test_annotate_validate_and_callbacks_run_in_order() -> None:
    log: list = []
    composed = ComposableQuantizer([Recording("a", log), Recording("b", log)])
    prepare_pt2e(export_model(ConvLinearWPermute()), composed)
    assert log == [
        ("annotate", "a"),
        ("annotate", "b"),
        ("validate", "a"),
        ("validate", "b"),
        ("callback", "a"),
        ("callback", "b"),
    ]


def test_validate_of_a_sub_quantizer_is_enforced() -> None:
    log: list = []
    composed = ComposableQuantizer([Recording("a", log), Recording("b", log, fail=True)])
    with pytest.raises(AnnotationError, match="b rejects"):
        prepare_pt2e(export_model(ConvLinearWPermute()), composed)


class Int8Only(Claiming):
    """Like XNNPACK: validate rejects every annotation whose spec is not int8."""

    def validate(self, model: GraphModule) -> None:
        for node in model.graph.nodes:
            annotation = get_annotation(node)
            specs = [*annotation.input_qspec_map.values()] if annotation else []
            if any(spec is not None and spec.dtype != torch.int8 for spec in specs):
                raise AnnotationError(f"{node.name} is not int8")


def test_each_validate_sees_only_its_own_annotations() -> None:
    """The int8-only rule must not reject the uint8 table the embedding quantizer claimed."""
    quantizer = ComposableQuantizer([EmbeddingQuantizer(), Int8Only(CONV + LINEAR)])
    converted = _quantize(EmbeddingConvLinearModule(), quantizer)
    # the hidden annotations were restored: the table and both weights are quantized
    assert_node_occurrence(converted, _counts(dq_channel=3))


def test_validate_still_checks_its_own_annotations() -> None:
    quantizer = ComposableQuantizer([EmbeddingQuantizer(), Int8Only(CONV + LINEAR)])
    quantizer.quantizers[1].weight = EmbeddingQuantizer().scopes.global_config.weight  # uint8
    with pytest.raises(AnnotationError, match="conv2d is not int8"):
        prepare_pt2e(export_model(EmbeddingConvLinearModule()), quantizer)


def test_embedding_validate_runs_inside_composition() -> None:
    class ComputedTable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(10, 4))

        def forward(self, indices, gain):
            return torch.nn.functional.embedding(indices, self.weight * gain)

    gm = export_model(ComputedTable(), (torch.randint(0, 10, (5,)), torch.tensor(2.0)))
    composed = ComposableQuantizer([EmbeddingQuantizer(), Claiming(LINEAR)])
    with pytest.raises(AnnotationError, match="computed in the graph"):
        prepare_pt2e(gm, composed)


def test_rejects_non_quantizers() -> None:
    with pytest.raises(TypeError, match=r"item 1 \(int\) is not a Quantizer"):
        ComposableQuantizer([EmbeddingQuantizer(), 3])


# ------------------------------------------------------------- with the XNNPACK backend


def _xnnpack_dynamic_then_static(dynamic_per_channel: bool) -> list[Quantizer]:
    """[dynamic linear, static everything] XNNPACK quantizers, as in the seed tests.

    The dynamic one is scoped to linear: the seed's dynamic config claimed only linears, while
    ExecuTorch's current one also claims convs.
    """
    xnnpack = pytest.importorskip("quantizers.xnnpack.quantizer")
    config = xnnpack.get_symmetric_quantization_config
    dynamic = config(is_per_channel=dynamic_per_channel, is_dynamic=True)
    return [
        xnnpack.XNNPACKQuantizer().set_operator_type(aten.linear.default, dynamic),
        xnnpack.XNNPACKQuantizer().set_global(config(is_per_channel=True)),
    ]


def test_with_xnnpack_linear_conv_seed_counts() -> None:
    quantizer = ComposableQuantizer(_xnnpack_dynamic_then_static(dynamic_per_channel=False))
    converted = _quantize(ConvLinearWPermute(), quantizer)
    expected = _counts(q=3, dq=4, q_tensor=1, dq_tensor=1, q_channel=0, dq_channel=1)
    assert_node_occurrence(converted, expected)


def test_with_xnnpack_embedding_conv_linear_seed_counts() -> None:
    quantizer = ComposableQuantizer([EmbeddingQuantizer(), *_xnnpack_dynamic_then_static(True)])
    converted = _quantize(EmbeddingConvLinearModule(), quantizer)
    expected = _counts(q=4, dq=4, q_tensor=1, dq_tensor=1, q_channel=0, dq_channel=3)
    assert_node_occurrence(converted, expected)


@pytest.mark.parametrize("scope", ["function_type", "module_name"])
def test_x86_none_scope_claims_mul_float_ahead_of_a_later_quantizer(scope: str) -> None:
    """X86's ``None`` scope means "leave float", and it claims the mul: XNNPACK, which on its
    own quantizes this mul, skips it when composed after, with no overwrite error."""
    xnnpack = pytest.importorskip("quantizers.xnnpack.quantizer")
    x86 = pytest.importorskip("quantizers.x86_inductor.quantizer")
    from tests.models.x86_patterns import (
        Mul,
    )

    def later() -> Quantizer:
        return xnnpack.XNNPACKQuantizer().set_global(xnnpack.get_symmetric_quantization_config())

    assert_node_occurrence(_quantize(Mul("same"), later()), _counts(q=3, dq=3))
    first = x86.X86InductorQuantizer().set_global(
        x86.get_default_x86_inductor_quantization_config()
    )
    if scope == "function_type":
        first.set_function_type_qconfig(torch.mul, None)
    else:
        first.set_module_name_qconfig("", None)  # the root module: every node
    converted = _quantize(Mul("same"), ComposableQuantizer([first, later()]))
    assert_node_occurrence(converted, _counts(q=0, dq=0) | {aten.mul.Tensor: 1})


class EmbeddingLinear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(12, 8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, tokens):
        return self.fc(self.emb(tokens))


@pytest.mark.torchao
@pytest.mark.executorch
def test_qat_with_embedding_quantizer_matches_torchao() -> None:
    """torchao's recipe ``ComposableQuantizer([EmbeddingQuantizer(), XNNPACK QAT])`` under
    ``prepare_qat_pt2e``: the table trains in float and is quantized once at convert (the
    embedding config has no QAT variant), the linear trains with fake-quant. Same quantized
    edges and bit-identical outputs after two SGD steps as torchao with ExecuTorch's
    quantizer."""
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer_xnnpack
    from torchao.quantization.pt2e import move_exported_model_to_eval as peer_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e as peer_convert
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e as peer_prepare_qat
    from torchao.quantization.pt2e.quantizer.composable_quantizer import (
        ComposableQuantizer as PeerComposable,
    )
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import (
        EmbeddingQuantizer as PeerEmbedding,
    )

    import pt2e_quant
    from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
    from tests.graph_check import quantized_edges

    torch.manual_seed(0)
    model = EmbeddingLinear().train()
    batches = [(torch.randint(0, 12, (2, 5)),) for _ in range(3)]
    exported = torch.export.export(model, batches[0]).module()
    knobs = {"is_per_channel": True, "is_qat": True}
    sides = {
        "ours": (
            pt2e_quant.prepare_qat_pt2e,
            pt2e_quant.convert_pt2e,
            pt2e_quant.move_exported_model_to_eval,
            ComposableQuantizer(
                [
                    EmbeddingQuantizer(),
                    XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**knobs)),
                ]
            ),
        ),
        "peer": (
            peer_prepare_qat,
            peer_convert,
            peer_to_eval,
            PeerComposable(
                [
                    PeerEmbedding(),
                    peer_xnnpack.XNNPACKQuantizer().set_global(
                        peer_xnnpack.get_symmetric_quantization_config(**knobs)
                    ),
                ]
            ),
        ),
    }
    results = {}
    for side, (prepare_qat, convert, to_eval, quantizer) in sides.items():
        prepared = prepare_qat(copy.deepcopy(exported), quantizer)
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
        for batch in batches[:2]:
            optimizer.zero_grad()
            prepared(*batch).square().mean().backward()
            optimizer.step()
        converted = to_eval(convert(prepared))
        with torch.no_grad():
            results[side] = (converted, converted(*batches[2]))
    (ours, ours_out), (theirs, theirs_out) = results["ours"], results["peer"]
    assert quantized_edges(ours) == quantized_edges(theirs)
    assert sum(n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL for n in ours.graph.nodes) == 2
    assert torch.equal(ours_out, theirs_out)
