"""A quantized op's scheme in words: how its activation and its weight are quantized.

LLM schemes differ per layer (8da4w linears next to int8 ones, an lm_head kept at 8 bits),
so explain() names the scheme of every quantized op from the dequantize nodes it reads in a
converted model: ``"act int8 per-token (dynamic), weight int4 per-group (32)"``. The bit
width comes from the quantized range (int4 values are stored in int8), the granularity from
the dequantize overload, "dynamic" from run-time qparams.
"""

from __future__ import annotations

import math

from torch.fx import Node

from pt2e_quant.ops import qdq_ops

__all__ = ["describe_scheme"]

_GRANULARITY = {
    qdq_ops.DEQUANTIZE_PER_TENSOR: "per-tensor",
    qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: "per-tensor",
    qdq_ops.DEQUANTIZE_PER_CHANNEL: "per-channel",
    qdq_ops.DEQUANTIZE_PER_TOKEN: "per-token",
}
#: where each dequantize overload keeps quant_min / quant_max
_RANGE_AT = {
    qdq_ops.DEQUANTIZE_PER_TENSOR: 3,
    qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC: 3,
    qdq_ops.DEQUANTIZE_PER_CHANNEL: 4,
    qdq_ops.DEQUANTIZE_PER_TOKEN: 3,
    qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP: 3,
}


def _bits(dq: Node) -> str | None:
    index = _RANGE_AT.get(dq.target)
    if index is None or len(dq.args) <= index + 1:
        return None
    low, high = dq.args[index], dq.args[index + 1]
    if not (isinstance(low, int) and isinstance(high, int)) or high <= low:
        return None
    bits = math.ceil(math.log2(high - low + 1))
    return f"{'u' if low >= 0 else ''}int{bits}"


def _describe(dq: Node) -> str | None:
    bits = _bits(dq)
    if bits is None:
        return None
    if dq.target == qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP:
        return f"{bits} per-group ({dq.args[6]})"
    text = f"{bits} {_GRANULARITY[dq.target]}"
    return text + " (dynamic)" if qdq_ops.is_dynamic_dequantize(dq) else text


def _is_weight(dq: Node) -> bool:
    """A dequantize of a constant: a folded integer weight, or a quantize of a weight."""
    source = dq.args[0]
    if isinstance(source, Node) and qdq_ops.is_quantize(source):
        source = source.args[0]
    return isinstance(source, Node) and source.op == "get_attr"


def describe_scheme(node: Node) -> str | None:
    """``"act ..., weight ..."`` for an op of a converted model that reads dequantized values;
    None when it reads none (a float op, or a prepared model's observers)."""
    parts = []
    for arg in node.all_input_nodes:
        if not qdq_ops.is_dequantize(arg) or (described := _describe(arg)) is None:
            continue
        role = "weight" if _is_weight(arg) else "act"
        part = f"{role} {described}"
        if part not in parts:
            parts.append(part)
    parts.sort(key=lambda part: part.startswith("weight"))  # activations first
    return ", ".join(parts) or None
