"""Rewrite quantized patterns into the integer arithmetic a backend would run, in plain aten ops.

``convert_pt2e(..., use_reference_representation=True)`` runs this last, so the graph shows the
integer computation instead of float ops between q/dq, still runs on CPU and re-exports.

Every pattern torchao's reference rewrite defines gets torchao's representation, node for node
(``reference/torchao_forms.py``): static int8 linear and convolution and add (+ relu) with
integer accumulation through ``torch.ops.higher_order.out_dtype``, which backends match,
dynamic int8 linear, ``max_pool2d_with_indices`` and the int8 q/dq per tensor (scalar or tensor
qparams) and per channel. Its output is torchao's, bit for bit, and like torchao's it is not
always the q/dq model's (torchao truncates where the kernels round). What torchao has no
pattern for keeps our exact forms (``reference/exact_forms.py``): conv1d/2d/3d and linear with
per-channel weights or a relu, ``max_pool2d``, uint8 operands, int16 / uint16 / int32 q/dq. So
does a match whose torchao replacement would not run or would compute another shape (a
bias-free linear or convolution; a convolution that is not 2-D, or dilated, or transposed):
the rows' conditions say which.

:data:`RULES` is the whole rewrite: rows of (pattern, action) in the order they run, each over
the whole graph by the one pattern driver
(:func:`pt2e_quant.graph.patterns.rewrite`). torchao's fused patterns go first in torchao's
order, then ours for what they left, then torchao's standalone q/dq, then ours. Matching runs
on our graph directly; nothing is traced or exported.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.graph.patterns import Rule, rewrite
from pt2e_quant.reference import exact_forms as exact
from pt2e_quant.reference import torchao_forms as torchao

__all__ = ["RULES", "rewrite_to_reference"]

RULES: tuple[Rule, ...] = (
    # torchao's fused patterns, in torchao's order
    Rule(
        "torchao dynamic linear", torchao.DYNAMIC_LINEAR, torchao.dynamic_linear, torchao.has_bias
    ),
    Rule("torchao linear", torchao.LINEAR, torchao.linear, torchao.has_bias),
    Rule("torchao convolution", torchao.CONVOLUTION, torchao.convolution, torchao.convolution_runs),
    Rule("torchao add relu", torchao.ADD_RELU, torchao.add_relu),
    Rule("torchao add", torchao.ADD, torchao.add),
    Rule("torchao max_pool2d", torchao.MAX_POOL2D_WITH_INDICES, torchao.max_pool2d_with_indices),
    # ours where torchao has none
    Rule("conv / linear", exact.CONV_OR_LINEAR, exact.conv_or_linear, exact.conv_or_linear_applies),
    Rule("add", exact.ADD, exact.add, exact.add_applies),
    Rule("max_pool2d", exact.MAX_POOL2D, exact.max_pool2d, exact.max_pool2d_applies),
    # what is left of q/dq: torchao's int8 forms, then ours (a dequantize before the quantize
    # it reads, which still tells the tensor's rank)
    Rule("torchao quantize", torchao.QUANTIZE_PER_TENSOR, torchao.quantize_per_tensor),
    Rule("torchao dequantize", torchao.DEQUANTIZE_PER_TENSOR, torchao.dequantize_per_tensor),
    Rule(
        "torchao quantize per channel",
        torchao.QUANTIZE_PER_CHANNEL,
        torchao.quantize_per_channel,
        torchao.has_zero_points,
    ),
    Rule(
        "torchao dequantize per channel",
        torchao.DEQUANTIZE_PER_CHANNEL,
        torchao.dequantize_per_channel,
        torchao.has_zero_points,
    ),
    Rule("dequantize", exact.DEQUANTIZE, exact.dequantize, exact.dequantize_applies),
    Rule("quantize", exact.QUANTIZE, exact.quantize, exact.quantize_applies),
)


def rewrite_to_reference(gm: GraphModule) -> bool:
    """Apply :data:`RULES` in order; returns True if anything was rewritten.

    The nodes a rewrite leaves unread (weight and qparam buffers) are left for the pass
    driver's dead-code removal.
    """
    return rewrite(gm.graph, RULES)
