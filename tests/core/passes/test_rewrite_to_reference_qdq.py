"""rewrite_to_reference on standalone quantize / dequantize ops and unmatched patterns.

What torchao's reference rewrite has no form for keeps ours (uint8, int16/int32, ops left
float between q/dq); these tests pin those forms: bit-identical where only q/dq are rewritten,
the kernels' rounding at ties, integers beyond float32's exact range, dynamic quantization.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant.contract.annotation import annotate_input, mark_annotated
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.core.passes._reference_models import (
    DQ,
    DQ_PC,
    NO_STATIC_QDQ,
    Q_PC,
    Conv,
    Net,
    aten,
    convert_both,
    only_node,
)
from tests.graph_check import assert_node_occurrence, count_ops

# ------------------------------------------------------------------------------------------
# standalone q / dq and unmatched patterns
# ------------------------------------------------------------------------------------------


def test_unmatched_conv_keeps_float_and_qdq_rewrite_is_bit_identical() -> None:
    """A conv with a float output is no quantized pattern: only its q/dq are rewritten, in
    torchao's int8 forms (the per-channel ones move the channel axis last with a transpose).

    torchao's quantize divides by the scale where the kernel multiplies by its reciprocal;
    the two differ only at a rounding tie, which no value here lands on."""
    activation, weight = int8_specs(our_observer, per_channel=True)

    def annotate_inputs_only(gm: GraphModule) -> None:
        for node in gm.graph.find_nodes(op="call_function", target=aten.conv2d.default):
            annotate_input(node, node.args[0], activation)
            annotate_input(node, node.args[1], weight)
            mark_annotated([node])

    inputs = (torch.randn(2, 16, 12, 12),)
    quantizer = FunctionQuantizer(annotate_inputs_only)
    for fold_quantize in (True, False):
        reference, plain = convert_both(Conv(), inputs, quantizer, fold_quantize)
        assert count_ops(plain)[Q_PC] == (0 if fold_quantize else 1)
        assert_node_occurrence(
            reference,
            {
                **NO_STATIC_QDQ,
                aten.conv2d.default: 1,
                # weight dequantize, and its quantize when not folded: a transpose in and out
                aten.transpose.int: 2 if fold_quantize else 4,
            },
        )
        assert only_node(reference, aten.conv2d.default).args[1].target is aten.transpose.int
        assert torch.equal(reference(*inputs), plain(*inputs))


def _near_ties(scale: float) -> torch.Tensor:
    """Values at and next to the rounding ties ``(k + 0.5) * scale`` of an int8 grid."""
    ties = (torch.arange(-128, 127, dtype=torch.float32) + 0.5) * scale
    up, down = torch.full_like(ties, 1e9), torch.full_like(ties, -1e9)
    return torch.cat([ties, torch.nextafter(ties, up), torch.nextafter(ties, down)])


def test_quantize_matches_the_kernels_at_rounding_ties() -> None:
    """``x * (1 / scale)`` as the kernels compute it, not ``x / scale`` (which differs there).

    uint8: torchao's int8 form divides, and int8 follows it (``test_rewrite_to_reference_torchao``).
    """

    class QuantizeBoth(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scales", torch.tensor([0.0258, 0.0394, 0.0054]))
            self.register_buffer("zero_points", torch.tensor([128, 131, 123]))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            args = (self.scales, self.zero_points, 1, 0, 255, torch.uint8)
            per_channel = qdq_ops.QUANTIZE_PER_CHANNEL_ANY(x, *args)
            return (
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(x, 0.0258, 131, 0, 255, torch.uint8),
                per_channel,
                qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY(per_channel, *args),
            )

    x = torch.stack([_near_ties(s) for s in (0.0258, 0.0394, 0.0054)], dim=1)
    gm = torch.export.export(QuantizeBoth(), (x,)).module()
    expected = gm(x)
    assert run_pass(gm, rewrite_to_reference) is True
    assert_node_occurrence(gm, {**NO_STATIC_QDQ, aten.reciprocal.default: 1})
    for got, want in zip(gm(x), expected, strict=True):
        assert got.dtype == want.dtype and torch.equal(got, want)


def test_int32_dequantize_is_bit_identical_beyond_float32_integers() -> None:
    """Above 2**24 not every int32 is a float32; subtracting the zero point before the cast
    (as integers) would round differently from the kernel, which casts first."""

    class Int32Dequantize(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(q, 3e-4, 7, -(2**31), 2**31 - 1, torch.int32)

    q = torch.randint(-(2**30), 2**30, (4096,), dtype=torch.int32)
    gm = torch.export.export(Int32Dequantize(), (q,)).module()
    expected = gm(q)
    assert run_pass(gm, rewrite_to_reference) is True
    assert_node_occurrence(gm, {DQ: 0, aten.sub.Tensor: 1})
    assert torch.equal(gm(q), expected)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8], ids=["int8", "uint8"])
def test_dynamic_quantization(dtype: torch.dtype) -> None:
    """int8 dynamic q/dq take torchao's forms, with the qparams choose_qparams computes at run
    time; uint8 ones, which torchao has no pattern for, stay as they are. Either way the
    per-channel weight dequantize is rewritten and the linear stays float (its input is)."""
    activation, weight = int8_specs(our_observer, dynamic=True)
    if dtype is torch.uint8:
        activation = dataclasses.replace(activation, dtype=dtype, quant_min=0, quant_max=255)
    inputs = (torch.randn(3, 8),)
    reference, plain = convert_both(
        nn.Linear(8, 5), inputs, ConvLinearQuantizer(activation, weight)
    )

    dynamic = {qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC: 1, qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: 1}
    assert_node_occurrence(plain, {**dynamic, qdq_ops.CHOOSE_QPARAMS: 1, DQ_PC: 1})
    left = 0 if dtype is torch.int8 else 1
    assert_node_occurrence(
        reference,
        {
            qdq_ops.CHOOSE_QPARAMS: 1,
            qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC: left,
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: left,
            DQ_PC: 0,
            aten.linear.default: 1,
        },
    )
    # torchao's int8 quantize divides where the kernel multiplies by the reciprocal: they can
    # differ at a rounding tie only, which no value here lands on
    assert torch.equal(reference(*inputs), plain(*inputs))


def test_graph_without_qdq_is_unchanged() -> None:
    gm = torch.export.export(Net().eval(), (torch.randn(1, 3, 8, 8),)).module()
    code, nodes = gm.code, len(gm.graph.nodes)
    assert rewrite_to_reference(gm) is False
    assert gm.code == code and len(gm.graph.nodes) == nodes
