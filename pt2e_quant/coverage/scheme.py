"""A quantized op's scheme in words: how its activation and its weight are quantized.

LLM schemes differ per layer (8da4w linears next to int8 ones, an lm_head kept at 8 bits),
so explain() names the scheme of every quantized op from the dequantize nodes it reads in a
converted model (the observers, in a prepared one): ``"act int8 per-token (dynamic), weight
int4 per-group (32)"``. The bit width comes from the quantized range (int4 values are stored
in int8), the granularity from the dequantize op's name, "dynamic" from run-time qparams.
"""

from __future__ import annotations

import math

from torch.fx import Node

from pt2e_quant.contract.specs import is_per_channel
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.observer.granular import (
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    granular_observer,
)
from pt2e_quant.ops import qdq_ops

__all__ = ["describe_scheme"]


def _bits(low: object, high: object) -> str | None:
    if not (isinstance(low, int) and isinstance(high, int)) or high <= low:
        return None
    bits = math.ceil(math.log2(high - low + 1))
    return f"{'u' if low >= 0 else ''}int{bits}"


def _describe_dequantize(dq: Node) -> str | None:
    """Read by schema argument name, so every dequantize overload reads alike."""
    bits = _bits(argument(dq, "quant_min"), argument(dq, "quant_max"))
    if bits is None:
        return None
    group_size = argument(dq, "group_size")
    if group_size is not None:
        return f"{bits} per-group ({group_size})"
    # dequantize_per_tensor / _per_channel / _per_token -> "per-tensor", ...
    granularity = dq.target.name().split("::")[-1].split(".")[0].removeprefix("dequantize_")
    text = f"{bits} {granularity.replace('_', '-')}"
    return text + " (dynamic)" if qdq_ops.is_dynamic_dequantize(dq) else text


def _describe_observer(node: Node) -> str | None:
    """The same words for a prepared model, read from the observer (or fake-quant) module."""
    module = node.graph.owning_module.get_submodule(str(node.target))
    if not is_observer_or_fake_quant(module):
        return None
    bits = _bits(getattr(module, "quant_min", None), getattr(module, "quant_max", None))
    if bits is None or not qdq_ops.is_quantized_dtype(getattr(module, "dtype", None)):
        return None
    granular = granular_observer(module)
    if isinstance(granular, PerGroupMinMaxObserver):
        return f"{bits} per-group ({granular.group_size})"
    if isinstance(granular, PerTokenDynamicObserver):
        granularity = "per-token"
    elif is_per_channel(getattr(module, "qscheme", None)):
        granularity = "per-channel"
    else:
        granularity = "per-tensor"
    dynamic = " (dynamic)" if getattr(module, "is_dynamic", False) else ""
    return f"{bits} {granularity}{dynamic}"


def _describe(arg: Node) -> str | None:
    if qdq_ops.is_dequantize(arg):
        return _describe_dequantize(arg)
    if arg.op == "call_module":
        return _describe_observer(arg)
    return None


def _is_weight(arg: Node) -> bool:
    """A dequantize (or observer) of a constant: a folded integer weight, a quantize of a
    weight, or an observed weight."""
    source = arg.args[0] if arg.args else None
    if isinstance(source, Node) and qdq_ops.is_quantize(source):
        source = source.args[0]
    return isinstance(source, Node) and source.op == "get_attr"


def describe_scheme(node: Node) -> str | None:
    """``"act ..., weight ..."`` for an op that reads quantized values (through dequantize
    nodes in a converted model, observers in a prepared one); None for a float op."""
    parts = []
    for arg in node.all_input_nodes:
        if (described := _describe(arg)) is None:
            continue
        role = "weight" if _is_weight(arg) else "act"
        part = f"{role} {described}"
        if part not in parts:
            parts.append(part)
    parts.sort(key=lambda part: part.startswith("weight"))  # activations first
    return ", ".join(parts) or None
