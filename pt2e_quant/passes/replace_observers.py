"""Replace every observer / fake-quant call with the decomposed ops it stands for.

Static per-tensor (Python float scale, int zero point, as Inductor and ExecuTorch match)::

    obs = self.activation_post_process_0(x)
    ->  q = quantized_decomposed.quantize_per_tensor.default(x, 0.02, 3, 0, 255, torch.uint8)
        dq = quantized_decomposed.dequantize_per_tensor.default(q, 0.02, 3, 0, 255, torch.uint8)

Per-channel observers keep scale / zero point as buffers (``_scale_0``, ``_zero_point_0``) read
by get_attr; dynamic observers become ``choose_qparams.tensor -> quantize_per_tensor.tensor ->
dequantize_per_tensor.tensor``; float16 observers become a cast to fp16 and back to the value's
dtype; other float observers (e.g. a float32 placeholder for a bias) disappear. The LLM
granularities: a per-group weight observer becomes ``quantize/dequantize_per_channel_group``
with (rows, groups) scale buffers, a per-token observer ``choose_qparams_per_token_asymmetric
-> quantize_per_token -> dequantize_per_token`` (``choose_qparams_per_token`` when symmetric).
"""

from __future__ import annotations

import operator
import warnings
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.specs import is_per_channel
from pt2e_quant.errors import warn_user
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.graph.node_meta import copy_debug_handle
from pt2e_quant.observer.granular import (
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    granular_observer,
)
from pt2e_quant.ops import qdq_ops

__all__ = ["replace_observers", "UncalibratedObserverWarning", "observer_saw_data"]


class UncalibratedObserverWarning(UserWarning):
    """convert met observers that never saw data; their qparams are defaults, not measurements."""


def observer_saw_data(module: torch.nn.Module) -> bool:
    """Whether an observer (ours or torch.ao's) or a fake-quant's observer has statistics.

    Observers without statistics to collect (placeholder, fixed-qparams, derived) count as seen.
    """
    if hasattr(module, "has_observed_data"):
        flag = module.has_observed_data
        return bool(flag() if callable(flag) else flag)
    inner = getattr(module, "activation_post_process", None)
    if isinstance(inner, torch.nn.Module):
        return observer_saw_data(inner)
    min_val = getattr(module, "min_val", None)
    max_val = getattr(module, "max_val", None)
    if isinstance(min_val, torch.Tensor) and isinstance(max_val, torch.Tensor):
        return (
            min_val.numel() > 0
            and bool(torch.isfinite(min_val).all())
            and bool(torch.isfinite(max_val).all())
        )
    return True


class _Replacer:
    def __init__(self, gm: GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.uncalibrated: list[str] = []
        self.next_index: dict[str, int] = {}

    def new_buffer(self, prefix: str, value: torch.Tensor) -> Node:
        index = self.next_index.get(prefix, 0)
        while hasattr(self.gm, f"{prefix}{index}"):
            index += 1
        self.next_index[prefix] = index + 1
        name = f"{prefix}{index}"
        self.gm.register_buffer(name, value.detach().clone())
        return self.graph.get_attr(name)

    def replace(self, node: Node, module: torch.nn.Module) -> None:
        if hasattr(module, "convert") and callable(module.convert):
            module.convert(self.gm, node)  # user-defined lowering of a custom observer
            return
        dtype = getattr(module, "dtype", torch.float32)
        is_dynamic = bool(getattr(module, "is_dynamic", False))
        granular = granular_observer(module)  # the observer itself, or a QAT fake-quant's
        with self.graph.inserting_before(node):
            if dtype == torch.float16:
                out = self._cast_round_trip(node)
            elif isinstance(granular, PerTokenDynamicObserver):
                out = self._per_token(node, granular, dtype)
            elif isinstance(granular, PerGroupMinMaxObserver):
                out = self._per_group(node, module, granular.group_size, dtype)
            elif is_dynamic and qdq_ops.is_quantized_dtype(dtype):
                out = self._dynamic(node, module, dtype)
            elif qdq_ops.is_quantized_dtype(dtype):
                out = self._static(node, module, dtype)
            else:
                out = node.args[0]
        node.replace_all_uses_with(out)
        if isinstance(out, Node) and out is not node.args[0]:
            copy_debug_handle(node, out)
        self.graph.erase_node(node)

    def _value_dtype(self, input_node: Any) -> torch.dtype:
        """The dtype of the observed value, which dequantize / the fp16 round trip restore."""
        val = input_node.meta.get("val") if isinstance(input_node, Node) else None
        return val.dtype if isinstance(val, torch.Tensor) else torch.float32

    def _dq_kwargs(self, input_node: Any) -> dict[str, Any]:
        dtype = self._value_dtype(input_node)
        return {} if dtype == torch.float32 else {"out_dtype": dtype}

    def _measured_qparams(self, node: Node, module: torch.nn.Module) -> tuple[Any, Any]:
        """The observer's (scale, zero_point), noting it if it never saw data."""
        if not observer_saw_data(module):
            self.uncalibrated.append(str(node.args[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # we report uncalibrated observers once, by name
            return module.calculate_qparams()

    def _static(self, node: Node, module: torch.nn.Module, dtype: torch.dtype) -> Node:
        scale, zero_point = self._measured_qparams(node, module)
        x = node.args[0]
        plain = qdq_ops.to_plain_dtype(dtype)
        qmin, qmax = module.quant_min, module.quant_max
        if is_per_channel(getattr(module, "qscheme", None)):
            scale_node = self.new_buffer("_scale_", scale)
            zp_node = self.new_buffer("_zero_point_", zero_point)
            qparams = (scale_node, zp_node, int(module.ch_axis), qmin, qmax, plain)
            q_op, dq_op = qdq_ops.QUANTIZE_PER_CHANNEL, qdq_ops.DEQUANTIZE_PER_CHANNEL
        else:
            qparams = (float(scale), int(zero_point), qmin, qmax, plain)
            q_op, dq_op = qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR
        q = self.graph.call_function(q_op, (x, *qparams))
        return self.graph.call_function(dq_op, (q, *qparams), self._dq_kwargs(x))

    def _dynamic(self, node: Node, module: torch.nn.Module, dtype: torch.dtype) -> Node:
        x = node.args[0]
        plain = qdq_ops.to_plain_dtype(dtype)
        qscheme = getattr(module, "qscheme", torch.per_tensor_affine)
        choose = qdq_ops.CHOOSE_QPARAMS_FOR_QSCHEME.get(qscheme, qdq_ops.CHOOSE_QPARAMS)
        eps = float(getattr(module, "eps", torch.finfo(torch.float32).eps))
        qmin, qmax = module.quant_min, module.quant_max
        chosen = self.graph.call_function(choose, (x, qmin, qmax, eps, plain))
        scale = self.graph.call_function(operator.getitem, (chosen, 0))
        zero_point = self.graph.call_function(operator.getitem, (chosen, 1))
        qparams = (scale, zero_point, qmin, qmax, plain)
        q = self.graph.call_function(qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC, (x, *qparams))
        return self.graph.call_function(
            qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC, (q, *qparams), self._dq_kwargs(x)
        )

    def _per_group(
        self, node: Node, module: torch.nn.Module, group_size: int, dtype: torch.dtype
    ) -> Node:
        """One (scale, zero point) per group of input columns; the scales are buffers of
        shape (rows, groups), the layout the group ops and XNNPACK's 4-bit kernels take."""
        scale, zero_point = self._measured_qparams(node, module)
        x = node.args[0]
        scale_node = self.new_buffer("_scale_", scale)
        zp_node = self.new_buffer("_zero_point_", zero_point)
        plain = qdq_ops.to_plain_dtype(dtype)
        qparams = (scale_node, zp_node, module.quant_min, module.quant_max, plain)
        size = int(group_size)
        q = self.graph.call_function(qdq_ops.QUANTIZE_PER_CHANNEL_GROUP, (x, *qparams, size))
        return self.graph.call_function(
            qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP, (q, *qparams, size, self._value_dtype(x))
        )

    def _per_token(self, node: Node, module: torch.nn.Module, dtype: torch.dtype) -> Node:
        """Qparams chosen per token at run time: asymmetric, as XNNPACK's dynamic linear
        expects, or symmetric (zero points 0), as Inductor's ``_int_mm`` pattern expects."""
        x = node.args[0]
        plain = qdq_ops.to_plain_dtype(dtype)
        choose = qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_FOR_QSCHEME[module.qscheme]
        chosen = self.graph.call_function(choose, (x, plain))
        scale = self.graph.call_function(operator.getitem, (chosen, 0))
        zero_point = self.graph.call_function(operator.getitem, (chosen, 1))
        qparams = (scale, zero_point, module.quant_min, module.quant_max, plain)
        q = self.graph.call_function(qdq_ops.QUANTIZE_PER_TOKEN, (x, *qparams))
        return self.graph.call_function(
            qdq_ops.DEQUANTIZE_PER_TOKEN, (q, *qparams, self._value_dtype(x))
        )

    def _cast_round_trip(self, node: Node) -> Node:
        """fp16 and back to the value's own dtype (torchao always casts back to float32,
        which turns a float64 or bfloat16 value into a float32 one mid-graph)."""
        x = node.args[0]
        half = self.graph.call_function(qdq_ops.CONVERT_ELEMENT_TYPE, (x, torch.float16))
        return self.graph.call_function(qdq_ops.CONVERT_ELEMENT_TYPE, (half, self._value_dtype(x)))


def replace_observers(gm: GraphModule) -> bool:
    """Turn every observer call of ``gm`` into q/dq ops; warn once about uncalibrated ones."""
    replacer = _Replacer(gm)
    changed = False
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(str(node.target))
        if not is_observer_or_fake_quant(module):
            continue
        replacer.replace(node, module)
        changed = True
    if replacer.uncalibrated:
        names = ", ".join(f"'{n}'" for n in replacer.uncalibrated)
        warn_user(
            f"convert_pt2e: {len(replacer.uncalibrated)} observer(s) never saw data (observing "
            f"{names}); their qparams fall back to scale=1.0, zero_point=0. Run calibration "
            "inputs through the prepared model before convert_pt2e.",
            UncalibratedObserverWarning,
        )
    _delete_unused_observer_modules(gm)
    return changed


def _delete_unused_observer_modules(gm: GraphModule) -> None:
    """Delete every observer attribute no node calls any more.

    Reads ``_modules`` itself: ``named_children`` lists a module once, under its first name,
    and an observer shared between edges is registered under several names, so the aliases
    (with their histograms) would outlive convert and be exported with the model.
    """
    used = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for name, child in list(gm._modules.items()):
        if name not in used and is_observer_or_fake_quant(child):
            delattr(gm, name)
