"""Already quantized regions: found by structure, left alone by prepare (ours only).

A submodule converted earlier and exported again inside its parent arrives at prepare as
plain q/dq ops (export keeps none of convert's node metadata). prepare must not observe those
values again, re-quantize the int8 weight or wrap the region's ops a second time, while a
value the model fake-quantizes itself stays an ordinary op. The differential file checks the
same flows against torchao; these tests pin the structure and the rules behind it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant.graph.quantized_regions import find_quantized_regions
from pt2e_quant.ops import qdq_ops
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.pipeline._edge_case_pipeline import (
    DQ,
    DQ_CH,
    QUANTIZERS,
    Q,
    all_equal,
    quiet,
    run_pipeline,
    sqnr,
    x86_quantizer,
    xnnpack_quantizer,
)
from tests.graph_check import count_ops, quantized_edges
from tests.models import ZOO
from tests.models.reentrant import (
    FakeQuantizedExtraInput,
    HeadThenPart,
    LinearRelu,
    PartThenHead,
    export,
)

aten = torch.ops.aten


def _converted_part(backend: str, x: torch.Tensor, quantizer=None) -> GraphModule:
    torch.manual_seed(0)
    with quiet():
        return run_pipeline(export(LinearRelu(), x), quantizer or QUANTIZERS[backend](), [(x,)])


def _qdq_calls(gm: GraphModule) -> list[tuple]:
    """Each per-tensor q/dq with its literal qparams, in graph order."""
    return [(n.target, *n.args[1:]) for n in gm.graph.nodes if n.target in (Q, DQ)]


def test_a_converted_part_inside_its_parent_is_a_region() -> None:
    x = torch.randn(8, 4)
    parent = export(PartThenHead(_converted_part("xnnpack", x)), x)
    regions = find_quantized_regions(parent)
    linears = [n for n in parent.graph.nodes if n.target is aten.linear.default]
    relu = next(n for n in parent.graph.nodes if n.target is aten.relu.default)
    assert regions.ops == {linears[0], relu}  # the part's; the float head is not
    dqs = {n for n in parent.graph.nodes if n.target in (DQ, DQ_CH)}
    assert regions.dequantizes == dqs  # input, weight and output of the part
    assert regions.quantizes == {n for n in parent.graph.nodes if n.target == Q}


def test_a_value_fake_quantized_in_forward_is_no_region() -> None:
    example = (torch.randn(2, 4), torch.randn(2, 4))
    regions = find_quantized_regions(export(FakeQuantizedExtraInput(), *example))
    assert not regions.ops and not regions.dequantizes and not regions.quantizes


def test_a_float_model_has_no_region() -> None:
    x = torch.randn(8, 4)
    regions = find_quantized_regions(export(HeadThenPart(LinearRelu()), x))
    assert not regions.ops and not regions.dequantizes


@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
def test_the_part_keeps_its_qdq_and_int8_weight(backend: str) -> None:
    """Nothing new on the part's edges: its q/dq (with their qparams) and its int8 weight
    come through unchanged, and the head reads the part's output dq as it is."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    part = _converted_part(backend, x)
    model = PartThenHead(part)
    with quiet():
        converted = run_pipeline(export(model, x), QUANTIZERS[backend](), [(x,)])
    part_calls = _qdq_calls(part)
    calls = _qdq_calls(converted)
    assert calls[: len(part_calls)] == part_calls
    # one new q/dq pair: XNNPACK's head output; X86 leaves the part's relu float, so the
    # head's input is quantized (and its output stays float)
    assert len(calls) == len(part_calls) + 2
    head = [n for n in converted.graph.nodes if n.target is aten.linear.default][-1]
    head_input = head.args[0]  # XNNPACK: the part's own output dq, read as it is
    assert head_input.target == DQ and head_input.args[0].args[0].target is aten.relu.default
    ops = count_ops(converted)
    assert ops[qdq_ops.QUANTIZE_PER_CHANNEL] == 0 and ops[DQ_CH] == 2  # both weights int8
    assert torch.equal(converted.part._frozen_param0, part._frozen_param0)
    model.training = False
    assert sqnr(converted(x), model(x)) > 20


def test_the_part_computes_bit_for_bit_as_before() -> None:
    """The whole parent runs the part's region exactly as the converted part alone does."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    part = _converted_part("xnnpack", x)
    identity_head = nn.Linear(4, 4)
    with torch.no_grad():
        identity_head.weight.copy_(torch.eye(4))
        identity_head.bias.zero_()
    parent = export(HeadThenPart(part, identity_head), x)
    no_head = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    no_head.set_module_name("head", None)  # leave the head float: only the part is quantized
    with quiet():
        converted = run_pipeline(parent, no_head, [(x,)])
    assert all_equal(converted(x), part(x))


def test_a_dynamically_quantized_part_keeps_its_one_dynamic_chain() -> None:
    x = torch.randn(8, 4)
    dynamic = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    part = _converted_part("xnnpack", x, XNNPACKQuantizer().set_global(dynamic))
    with quiet():
        converted = run_pipeline(
            export(PartThenHead(part), x), XNNPACKQuantizer().set_global(dynamic), [(x,)]
        )
    ops = count_ops(converted)
    assert ops[qdq_ops.CHOOSE_QPARAMS] == 2  # one per linear, none added on the part
    assert ops[qdq_ops.QUANTIZE_PER_CHANNEL] == 0 and ops[DQ_CH] == 2


class PartCatFloat(nn.Module):
    """x ─ part ─┐
    y ───────── cat   (XNNPACK gives cat's inputs and output one scale)"""

    def __init__(self, part: nn.Module) -> None:
        super().__init__()
        self.part = part

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.part(x), y], 1)


def test_a_region_value_tied_to_a_float_value_is_observed_again() -> None:
    """One scale must cover the part's output and ``y``: the shared observer sees both, so
    the part's output is re-quantized to it instead of keeping its own qparams."""
    x, y = torch.randn(8, 4), torch.randn(8, 4) * 3
    part = _converted_part("xnnpack", x)
    with quiet():
        converted = run_pipeline(export(PartCatFloat(part), x, y), xnnpack_quantizer(), [(x, y)])
    cat = next(n for n in converted.graph.nodes if n.target is aten.cat.default)
    inputs = cat.args[0]
    assert all(i.target == DQ for i in inputs)
    assert len({i.args[1:] for i in inputs}) == 1  # one scale for both inputs
    requantized = inputs[0].args[0]
    assert requantized.args[0].target == DQ  # the part's own output dq, quantized again


@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
@pytest.mark.parametrize("name", ["tiny_resnet", "mobilenet_v3_block", "transformer_encoder"])
def test_preparing_a_converted_model_again_changes_nothing(name: str, backend: str) -> None:
    """In the same process (convert's annotations still on the nodes) and after exporting
    the converted model again inside a parent: every op is in a region already."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    example = model.example_inputs()
    with quiet():
        converted = run_pipeline(export(model, *example), QUANTIZERS[backend](), [example])
        again = run_pipeline(converted, QUANTIZERS[backend](), [example])
        reexported = export(_Wrapper(converted), *example)
        again_reexported = run_pipeline(reexported, QUANTIZERS[backend](), [example])
    nodes = [n.format_node() for n in converted.graph.nodes]
    assert [n.format_node() for n in again.graph.nodes] == nodes
    assert quantized_edges(again_reexported) == quantized_edges(converted)
    assert all_equal(again(*example), converted(*example))
    assert all_equal(again_reexported(*example), converted(*example))


class _Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.inner(*args)


@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
def test_a_second_pass_quantizes_what_the_first_left_float(backend: str) -> None:
    """Quantize the part first (the head scoped to None), convert, then prepare the converted
    model with the head included. The first pass's annotations stay on the converted model
    (X86's claims the head as float): they no longer bind the second quantizer."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    gm = export(HeadThenPart(LinearRelu()), x)
    if backend == "xnnpack":
        first = xnnpack_quantizer().set_module_name("head", None)
    else:
        first = x86_quantizer().set_module_name_qconfig("head", None)
    with quiet():
        part_only = run_pipeline(gm, first, [(x,)])
        whole = run_pipeline(part_only, QUANTIZERS[backend](), [(x,)])
    head = next(n for n in whole.graph.nodes if n.target is aten.linear.default)
    assert head.args[0].target == DQ and head.args[1].target == DQ_CH  # now quantized
    part_calls, whole_calls = _qdq_calls(part_only), _qdq_calls(whole)
    assert len(whole_calls) == len(part_calls) + 2  # the head's input q/dq
    assert all(call in whole_calls for call in part_calls)
