"""Predicting which ops Inductor (x86, oneDNN) turns into int8 kernels, and the freezing warning.

Facts read from torchao 0.18.0 ``torchao/quantization/pt2e/inductor_passes/x86.py`` (the
patterns Inductor's freezing pass registers): a weight-prepack pattern matches
``dequantize_per_tensor(act) -> convolution / linear <- dequantize_per_channel(constant
weight)`` on CPU for conv1d / conv2d (``dim() in [3, 4]``) and linear, and replaces it with one
oneDNN ``qconv`` / ``qlinear`` kernel; the post-op patterns then fold the unary / binary ops of
our X86 recipe (:data:`quantizers.x86_inductor.rules.FUSION_RULES`) into that kernel. The
prepack patterns are only registered by the freezing pass, so nothing is fused unless
``torch._inductor.config.freezing`` is True when compiling.

Predictions: ``"int8 qconv"`` / ``"int8 qlinear"`` for the kernel's anchor, ``"fused into
qconv (<anchor>)"`` for a post-op the recipe fused into it; None for everything else. A binary
post-op (the add of a residual) only joins the kernel when its other operand is dequantized
too: one left float (an input kept so because it is written in place) leaves the add outside,
as Inductor's binary patterns do.
"""

from __future__ import annotations

from torch.fx import Node

from pt2e_quant.coverage.classify import is_compute_op
from pt2e_quant.coverage.evidence import Status, example_value, is_quantized_edge, tensor_inputs
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.ops.families import LINEAR_OPS
from pt2e_quant.ops.qdq_ops import is_dequantize
from quantizers.x86_inductor.rules import CONV1D_OPS, CONV2D_OPS

__all__ = ["FREEZING_WARNING", "freezing_warning", "predict_x86"]

FREEZING_WARNING = (
    "int8 kernels need torch._inductor.config.freezing = True: without it Inductor runs the "
    "q/dq ops and float conv/linear (set it, or compile under "
    "torch._inductor.config.patch(freezing=True))"
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


def _prepacks(node: Node) -> bool:
    """``dq(act) -> conv/linear <- dq(constant weight)`` on CPU, the prepack pattern."""
    activation, weight = argument(node, "input"), argument(node, "weight")
    if not (is_dequantize(activation) and is_dequantize(weight)):
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


def predict_x86(node: Node, status: Status) -> str | None:
    """What Inductor will make of ``node`` (see the module docstring)."""
    kernel = _kernel(node)
    if kernel is not None and status.quantized and _prepacks(node):
        return f"int8 {kernel}"
    anchor = status.fused_into
    if anchor is None or not (status.quantized and _kernel(anchor) and _prepacks(anchor)):
        return None
    if not _operands_reach_the_kernel(node):
        return None
    return f"fused into {_kernel(anchor)} ({anchor.name})"
