"""Predicting which ops Inductor (x86, oneDNN) turns into int8 kernels, and the freezing warning.

Facts read from torchao 0.18.0 ``torchao/quantization/pt2e/inductor_passes/x86.py`` (the
patterns Inductor's freezing pass registers): a weight-prepack pattern matches
``dequantize_per_tensor(act) -> convolution / linear <- dequantize_per_channel(constant
weight)`` on CPU for conv1d / conv2d (``dim() in [3, 4]``) and linear, and replaces it with one
oneDNN ``qconv`` / ``qlinear`` kernel; the post-op patterns then fold the unary / binary ops of
our X86 recipe (:data:`quantizers.x86_inductor.rules.FUSION_RULES`) into that kernel. The
prepack patterns are only registered by the freezing pass, so nothing is fused unless
``torch._inductor.config.freezing`` is True when compiling.

The prepack pattern takes a per-tensor activation dequantize only: a per-token one (the
dynamic LLM scheme), a float activation (weight-only int8) and ``addmm`` with its weight per
column (GPT-2's ``Conv1D``) compile to float math on dequantized values (checked by
compiling), until :func:`~quantizers.x86_inductor.inductor_rewrites.rewrite_for_inductor`
rewrites them. Their prediction says so: ``"int8 qlinear after rewrite_for_inductor"`` or
``"int8 weight-only mm after rewrite_for_inductor"``, not counted as fused kernels.

Predictions: ``"int8 qconv"`` / ``"int8 qlinear"`` for the kernel's anchor, ``"fused into
qconv (<anchor>)"`` for a post-op the recipe fused into it; None for everything else. A binary
post-op (the add of a residual) only joins the kernel when its other operand is dequantized
too: one left float (an input kept so because it is written in place) leaves the add outside,
as Inductor's binary patterns do.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from pt2e_quant.coverage.classify import is_compute_op
from pt2e_quant.coverage.evidence import Status, example_value, is_quantized_edge, tensor_inputs
from pt2e_quant.graph.aten_args import argument, module_constant
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.families import ADDMM_OPS, LINEAR_OPS
from pt2e_quant.ops.qdq_ops import is_dequantize, is_qparam_getitem
from quantizers.x86_inductor.rules import CONV1D_OPS, CONV2D_OPS

__all__ = ["FREEZING_WARNING", "freezing_warning", "predict_x86"]

FREEZING_WARNING = (
    "int8 kernels need torch._inductor.config.freezing = True: without it Inductor runs the "
    "q/dq ops and float conv/linear (set it, or compile under "
    "torch._inductor.config.patch(freezing=True))"
)


_AFTER_REWRITE = "after rewrite_for_inductor"
_PER_TENSOR_DEQUANTIZE = frozenset(
    getattr(qdq_ops.DEQUANTIZE_PER_TENSOR_ANY, name)
    for name in qdq_ops.DEQUANTIZE_PER_TENSOR_ANY.overloads()
)


def freezing_warning() -> str | None:
    """The warning text when Inductor's freezing is off at explain time, else None."""
    import torch._inductor.config as inductor_config

    return None if inductor_config.freezing else FREEZING_WARNING


def _kernel(node: Node) -> str | None:
    if node.target in CONV1D_OPS | CONV2D_OPS:
        return "qconv"
    if node.target in LINEAR_OPS:
        return "qlinear"
    return None


def _per_tensor_dequantize(node: object) -> bool:
    return isinstance(node, Node) and node.target in _PER_TENSOR_DEQUANTIZE


def _prepacks(node: Node) -> bool:
    """``dq(act) -> conv/linear <- dq(constant weight)`` on CPU, the prepack pattern."""
    activation, weight = argument(node, "input"), argument(node, "weight")
    if not (_per_tensor_dequantize(activation) and is_dequantize(weight)):
        return False
    stored = weight.args[0]
    if not isinstance(stored, Node) or stored.op not in ("get_attr", "placeholder"):
        return False
    value = example_value(activation)
    if value is not None and value.device.type != "cpu":
        return False
    return node.target in LINEAR_OPS or value is None or value.dim() in (3, 4)


def _operands_reach_the_kernel(node: Node) -> bool:
    """Each tensor operand of a post-op is the fused chain itself or a dequantized value."""
    return all(is_compute_op(arg) or is_quantized_edge(arg) for arg in tensor_inputs(node))


def _after_rewrite(node: Node) -> str | None:
    """The kernel :func:`rewrite_for_inductor` gives a quantized linear / addmm that Inductor
    would not fuse as converted, if any."""
    if node.target in ADDMM_OPS:
        activation, weight = node.args[1], node.args[2]
    elif node.target in LINEAR_OPS:
        activation, weight = argument(node, "input"), argument(node, "weight")
    else:
        return None
    if not (is_dequantize(weight) and isinstance(weight.args[0], Node)):
        return None
    if weight.args[0].op != "get_attr":
        return None
    if node.target in ADDMM_OPS and _per_tensor_dequantize(activation):
        return f"int8 qlinear {_AFTER_REWRITE}"
    if isinstance(activation, Node) and activation.target is qdq_ops.DEQUANTIZE_PER_TOKEN:
        chooser = activation.args[1].args[0] if is_qparam_getitem(activation.args[1]) else None
        if getattr(chooser, "target", None) is qdq_ops.CHOOSE_QPARAMS_PER_TOKEN:
            return f"int8 qlinear {_AFTER_REWRITE}"
        return None
    if is_dequantize(activation):
        return None
    value, stored = (
        example_value(activation),
        module_constant(node.graph.owning_module, weight.args[0]),
    )
    if value is not None and value.dtype == torch.bfloat16 and stored is not None:
        if stored.shape[-1] % 16:
            return None  # left float by the rewrite (the bfloat16 kernel's K constraint)
    return f"int8 weight-only mm {_AFTER_REWRITE}"


def predict_x86(node: Node, status: Status) -> str | None:
    """What Inductor will make of ``node`` (see the module docstring)."""
    kernel = _kernel(node)
    if kernel is not None and status.quantized and _prepacks(node):
        return f"int8 {kernel}"
    if status.quantized:
        rewritten = _after_rewrite(node)
        if rewritten is not None:
            return rewritten
    anchor = status.fused_into
    if anchor is None or not (status.quantized and _kernel(anchor) and _prepacks(anchor)):
        return None
    if not _operands_reach_the_kernel(node):
        return None
    return f"fused into {_kernel(anchor)} ({anchor.name})"
