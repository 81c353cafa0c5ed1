"""prepare_pt2e / convert_pt2e behaviour beyond the seed counts: IR variants, control flow, op forms."""

from __future__ import annotations

import io

import pytest
import torch
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    QuantizationAnnotation,
    QuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.graph_check import assert_node_occurrence, count_ops
from tests.models import (
    CondLinear,
    ConvWithBNRelu,
    NoGradLinear,
    ResNetBasicBlock,
    ScanLinear,
    TwoLinearModule,
    WhileLinear,
)

aten = torch.ops.aten


def _qdq_counts(gm: GraphModule) -> dict[str, int]:
    """q/dq/choose_qparams counts over the graph and every control-flow body."""
    counts: dict[str, int] = {}
    for graph_module in iter_graph_modules(gm):
        for node in graph_module.graph.nodes:
            if node.op == "call_function" and "quantized_decomposed" in str(node.target):
                key = str(node.target).split("quantized_decomposed.")[1]
                counts[key] = counts.get(key, 0) + 1
    return counts


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _quantize(model, inputs, quantizer, strict=False):
    gm = torch.export.export(model.eval(), inputs, strict=strict).module()
    prepared = prepare_pt2e(gm, quantizer)
    prepared(*inputs)
    return convert_pt2e(prepared)


def _roundtrip_equal(converted: GraphModule, inputs) -> bool:
    program = torch.export.export(converted, inputs)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    return torch.equal(_first(loaded.module()(*inputs)), _first(converted(*inputs)))


CONTROL_FLOW_MODELS = [NoGradLinear, CondLinear, ScanLinear, WhileLinear]


@pytest.mark.parametrize("model_cls", CONTROL_FLOW_MODELS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_control_flow_bodies_are_quantized(model_cls, dynamic) -> None:
    """no_grad regions, cond branches, scan and while bodies get q/dq, run with autograd on,
    re-export and survive torch.export.save/load bit for bit."""
    torch.manual_seed(0)
    model = model_cls().eval()
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, ConvLinearQuantizer(*int8_specs(our_observer, dynamic)))
    counts = _qdq_counts(converted)
    if dynamic:
        assert counts.get("choose_qparams.tensor", 0) >= 1, counts
    else:
        assert counts.get("quantize_per_tensor.default", 0) >= 1, counts
    assert counts.get("dequantize_per_channel.default", 0) >= 1, counts
    float_out, quant_out = _first(model(*inputs)), _first(converted(*inputs))
    assert torch.allclose(float_out, quant_out, atol=0.1), (float_out - quant_out).abs().max()
    assert _roundtrip_equal(converted, inputs)


def test_no_grad_region_is_inlined_and_weight_folded() -> None:
    model = NoGradLinear().eval()
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, ConvLinearQuantizer(*int8_specs(our_observer)))
    targets = [n.target for n in converted.graph.nodes if n.op == "call_function"]
    assert torch.ops.higher_order.wrap_with_set_grad_enabled not in targets
    assert_node_occurrence(
        converted, {qdq_ops.QUANTIZE_PER_CHANNEL: 0, qdq_ops.DEQUANTIZE_PER_CHANNEL: 1}
    )


@pytest.mark.parametrize("strict", [False, True], ids=["non_strict", "strict"])
def test_inplace_residual_block(strict: bool) -> None:
    """In-place relu_/add_ of a ResNet block become functional ops and get quantized."""
    torch.manual_seed(0)
    model = ResNetBasicBlock().eval()
    inputs = model.example_inputs()
    activation, weight = int8_specs(our_observer)

    def annotate(gm: GraphModule) -> None:
        ConvLinearQuantizer(activation, weight).annotate(gm)
        for node in gm.graph.nodes:
            if node.target in (aten.add.Tensor, aten.relu.default):
                inputs_ = [a for a in node.args if isinstance(a, torch.fx.Node)]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: activation for a in inputs_}, output_qspec=activation
                )

    converted = _quantize(model, inputs, FunctionQuantizer(annotate), strict=strict)
    targets = {n.target for n in converted.graph.nodes if n.op == "call_function"}
    assert not targets & {aten.relu_.default, aten.add_.Tensor}, targets
    assert aten.add.Tensor in targets
    assert torch.allclose(model(*inputs), converted(*inputs), atol=0.1)


def test_mutating_a_model_input_is_kept_in_place() -> None:
    class AddToInput(torch.nn.Module):
        def forward(self, x):
            x.add_(1.0)
            return x * 2

    gm = torch.export.export(AddToInput(), (torch.randn(2, 2),)).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(lambda m: None))
    assert any(n.target == aten.add_.Tensor for n in prepared.graph.nodes)


@pytest.mark.parametrize("check_guards", [True, False])
def test_guards_fn_node_is_tolerated(check_guards: bool) -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module(check_guards=check_guards)
    has_guard = any(n.name == "_guards_fn" for n in gm.graph.nodes)
    assert has_guard == check_guards
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    guard_nodes = [n for n in prepared.graph.nodes if n.name == "_guards_fn"]
    if check_guards:  # the guard keeps reading the raw user inputs
        assert all(a.op == "placeholder" for a in guard_nodes[0].args)
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    assert torch.allclose(model(*inputs), converted(*inputs), atol=0.1)


def test_dynamic_quantization_ops() -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, ConvLinearQuantizer(*int8_specs(our_observer, True)))
    assert_node_occurrence(
        converted,
        {
            qdq_ops.CHOOSE_QPARAMS: 2,
            qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC: 2,
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: 2,
            qdq_ops.QUANTIZE_PER_TENSOR: 0,
            qdq_ops.DEQUANTIZE_PER_CHANNEL: 2,
        },
    )


def test_per_tensor_qparams_are_python_scalars_and_per_channel_are_buffers() -> None:
    model = ConvWithBNRelu(relu=False, bn=False).eval()
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, ConvLinearQuantizer(*int8_specs(our_observer)))
    for node in converted.graph.nodes:
        if node.target in (qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR):
            assert type(node.args[1]) is float and type(node.args[2]) is int
            assert node.args[5] == torch.int8
        if node.target == qdq_ops.DEQUANTIZE_PER_CHANNEL:
            scale, zero_point = node.args[1], node.args[2]
            assert scale.op == "get_attr" and zero_point.op == "get_attr"
            assert isinstance(getattr(converted, scale.target), torch.Tensor)


def test_fold_quantize_false_keeps_weight_quantize() -> None:
    model = ConvWithBNRelu(relu=False, bn=False).eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    prepared(*inputs)
    folded = convert_pt2e(prepared)
    unfolded = convert_pt2e(prepared, fold_quantize=False)
    assert count_ops(folded)[qdq_ops.QUANTIZE_PER_CHANNEL] == 0
    assert count_ops(unfolded)[qdq_ops.QUANTIZE_PER_CHANNEL] == 1
    frozen = [n for n in folded.graph.nodes if n.op == "get_attr" and "_frozen_param" in n.target]
    assert len(frozen) == 1 and getattr(folded, frozen[0].target).dtype == torch.int8
    assert torch.equal(folded(*inputs), unfolded(*inputs))


def test_fp16_spec_becomes_cast_round_trip() -> None:
    fp16 = QuantizationSpec(
        dtype=torch.float16, observer_or_fake_quant_ctr=(our_observer.PlaceholderObserver)
    )

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target == aten.linear.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: fp16}, output_qspec=fp16
                )

    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    converted = _quantize(model, inputs, FunctionQuantizer(annotate))
    assert_node_occurrence(converted, {qdq_ops.CONVERT_ELEMENT_TYPE: 6})
    expected = model(*inputs)
    assert torch.allclose(expected, converted(*inputs), atol=1e-2)


def _two_linears_tagged() -> tuple[GraphModule, tuple]:
    """TwoLinearModule exported, each linear tagged ``tag_<name>`` (a partitioner's label)."""
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    for node in gm.graph.nodes:
        if node.target == aten.linear.default:
            node.meta["quantization_tag"] = f"tag_{node.name}"
    return gm, inputs


def test_metadata_ported_to_qdq_nodes() -> None:
    """stack_trace and quantization_tag of the op reach its input dq and output q."""
    gm, inputs = _two_linears_tagged()
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    for linear in (n for n in converted.graph.nodes if n.target == aten.linear.default):
        input_dq = linear.args[0]
        (output_q,) = linear.users
        for qdq in (input_dq, output_q):
            assert qdq.meta.get("quantization_tag") == linear.meta["quantization_tag"]
            assert qdq.meta.get("stack_trace") == linear.meta.get("stack_trace")
            assert qdq.meta.get("stack_trace")


class WeightThroughPermute(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return torch.mm(x, self.w.permute(1, 0))


@pytest.mark.parametrize("fold_quantize", [True, False])
def test_weight_quantize_through_a_permute_carries_the_weights_tag(fold_quantize) -> None:
    """The weight's quantize (and the permute between) belong with the weight, not the mm:
    they take its quantization_tag, which the folded int8 constant keeps."""
    activation, weight = int8_specs(our_observer, per_channel=False)

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                node.meta["quantization_tag"] = "weight"
            elif node.target == aten.mm.default:
                node.meta["quantization_tag"] = "mm"
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: activation, node.args[1]: weight}
                )

    inputs = (torch.randn(2, 4),)
    gm = torch.export.export(WeightThroughPermute(), inputs).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(annotate))
    prepared(*inputs)
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    (mm,) = converted.graph.find_nodes(op="call_function", target=aten.mm.default)
    weight_dq = mm.args[1]
    assert weight_dq.meta["quantization_tag"] == "mm"
    weight_q = weight_dq.args[0]
    assert weight_q.meta.get("quantization_tag") == "weight"
    assert (weight_q.op == "get_attr") is fold_quantize
    if not fold_quantize:
        assert weight_q.args[0].target == aten.permute.default
        assert weight_q.args[0].meta["quantization_tag"] == "weight"


def test_dynamic_choose_qparams_carries_the_consumers_metadata() -> None:
    """choose_qparams, q and dq of a dynamically quantized input are one unit with the
    linear they feed (lowering partitions them together)."""
    gm, _ = _two_linears_tagged()
    quantizer = ConvLinearQuantizer(*int8_specs(our_observer, dynamic=True))
    converted = convert_pt2e(prepare_pt2e(gm, quantizer))
    linears = converted.graph.find_nodes(op="call_function", target=aten.linear.default)
    assert len(linears) == 2
    for linear in linears:
        dq = linear.args[0]
        q = dq.args[0]
        choose = q.args[1].args[0]
        assert choose.target == qdq_ops.CHOOSE_QPARAMS
        for node in (choose, q, dq):
            assert node.meta.get("quantization_tag") == linear.meta["quantization_tag"]
            assert node.meta.get("stack_trace") == linear.meta["stack_trace"]


def test_debug_handle_follows_output_observer_and_dequantize() -> None:
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    handles = {}
    for index, node in enumerate(n for n in gm.graph.nodes if n.op == "call_function"):
        node.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: index + 1}
        handles[node.name] = index + 1
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    seen: dict[int, list[str]] = {}
    for node in converted.graph.nodes:
        handle = node.meta.get(CUSTOM_KEY, {}).get(NUMERIC_DEBUG_HANDLE_KEY)
        if handle is not None:
            seen.setdefault(handle, []).append(str(node.target))
    for name in ("linear", "linear_1"):
        targets = seen[handles[name]]
        assert sorted(targets) == sorted(
            ["aten.linear.default", "quantized_decomposed.dequantize_per_tensor.default"]
        )


def test_duplicate_dequantize_per_annotated_consumer() -> None:
    class Fork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)
            self.c = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = self.a(x)
            return self.b(y), self.c(y), y

    model = Fork().eval()
    inputs = (torch.randn(2, 4),)
    converted = _quantize(model, inputs, ConvLinearQuantizer(*int8_specs(our_observer)))
    first = next(n for n in converted.graph.nodes if n.target == aten.linear.default)
    (q,) = first.users
    dqs = list(q.users)
    # one dq for each annotated linear, one shared by the unannotated graph output
    assert len(dqs) == 3 and all(len(dq.users) == 1 for dq in dqs)
