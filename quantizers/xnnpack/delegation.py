"""Predicting, per compute op, what ExecuTorch's XNNPACK partitioner will do with it.

Facts read from ExecuTorch 1.5.1,
``executorch/backends/xnnpack/partition/config/{__init__,gemm_configs,generic_node_configs,
node_configs}.py`` (``ALL_PARTITIONER_CONFIGS`` and each config's
``supported_precision_types``), restated here as our own table keyed by the aten op *before*
edge lowering (``conv2d`` reaches the partitioner as ``convolution``, ``adaptive_avg_pool2d``
to 1x1 as ``mean.dim``):

* an op is delegated as int8 when its config supports ``STATIC_QUANT``, every input is a
  dequantize and its only user is a quantize, possibly through one fused activation (relu /
  hardtanh); in a prepared model observers stand for the q/dq ops. The partitioner reads the
  graph, not the annotations: an op the quantizer left float but that sits between a dq and
  a q (a max-pool scoped out between two quantized convs) runs int8 all the same;
* a float op is delegated in fp32 when its config supports ``FP32``;
* conv is 1-D or 2-D only (the table lists no other); ``add`` needs ``alpha == 1``; ``cat``
  needs at least two inputs; ``max_pool2d`` no ``ceil_mode``; ``mean.dim`` a 4-D input
  reduced over dims 2, 3, keepdim.

Prediction strings: ``"xnnpack int8"``, ``"xnnpack fp32"``, ``"not delegated"``; a fused
activation reads ``"xnnpack int8 (fused)"``.
"""

from __future__ import annotations

import torch
from torch.fx import Node

from pt2e_quant.coverage.evidence import (
    example_value,
    is_quantized_edge,
    is_quantizing_user,
    tensor_inputs,
)
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.ops.families import CONV_OPS, CONV_TRANSPOSE_OPS, LINEAR_OPS

__all__ = ["INT8", "FP32", "NOT_DELEGATED", "predict_xnnpack"]

INT8, FP32, NOT_DELEGATED = "xnnpack int8", "xnnpack fp32", "not delegated"

_aten = torch.ops.aten

#: ops with a STATIC_QUANT config (Convolution, Linear, Addmm/MM, Add, Sub, Mul, Cat, ReLU,
#: Hardtanh, Clamp, MaxPool2d, MeanDim)
_STATIC_QUANT = {
    _aten.conv1d.default,
    _aten.conv2d.default,
    _aten.conv1d.padding,
    _aten.conv2d.padding,
    _aten.conv_transpose1d.default,
    _aten.conv_transpose2d.input,
    _aten.linear.default,
    _aten.mm.default,
    _aten.addmm.default,
    _aten.add.Tensor,
    _aten.sub.Tensor,
    _aten.mul.Tensor,
    _aten.cat.default,
    _aten.relu.default,
    _aten.hardtanh.default,
    _aten.clamp.default,
    _aten.max_pool2d.default,
    _aten.mean.dim,
    _aten.adaptive_avg_pool2d.default,
}

#: ops with an FP32-only config (or decomposed into one): Abs, AvgPooling, BMM, BatchNorm, Div,
#: Elu, Exp, Gelu, Hardswish, LeakyReLU, Sigmoid, Softmax, Tanh, Pow, Sqrt, ...
_FP32_ONLY = {
    _aten.avg_pool2d.default,
    _aten.bmm.default,
    _aten.matmul.default,
    _aten.div.Tensor,
    _aten.gelu.default,
    _aten.hardswish.default,
    _aten.hardsigmoid.default,  # decomposed into add / clamp / div, each with an FP32 config
    _aten.leaky_relu.default,
    _aten.sigmoid.default,
    _aten.softmax.int,
    _aten._softmax.default,
    _aten.tanh.default,
    _aten.elu.default,
    _aten.prelu.default,
    _aten.upsample_bilinear2d.vec,
    _aten._native_batch_norm_legit_no_training.default,
}

_FUSED_ACTIVATIONS = {_aten.relu.default, _aten.hardtanh.default}
#: ops whose ``bias`` input may stay float inside an int8 pattern
_WEIGHTED = CONV_OPS | CONV_TRANSPOSE_OPS | LINEAR_OPS


def _constraints_hold(node: Node) -> bool:
    """The per-op constraints of the partitioner configs (module docstring)."""
    if node.target == _aten.add.Tensor or node.target == _aten.sub.Tensor:
        return node.kwargs.get("alpha", 1) == 1
    if node.target == _aten.cat.default:
        return len(node.all_input_nodes) >= 2
    if node.target == _aten.max_pool2d.default:
        return not argument(node, "ceil_mode", False)
    if node.target == _aten.mean.dim:
        value = example_value(node.args[0])
        dims = sorted(d % 4 for d in node.args[1]) if value is not None else []
        return (
            value is not None
            and value.dim() == 4
            and dims == [2, 3]
            and argument(node, "keepdim", False)
        )
    if node.target == _aten.adaptive_avg_pool2d.default:
        return list(node.args[1]) == [1, 1]
    return True


def _ends_in_quantize(node: Node) -> bool:
    """Only user is a quantize, directly or through one fused activation."""
    if len(node.users) != 1:
        return False
    (user,) = node.users
    if user.op == "call_function" and user.target in _FUSED_ACTIVATIONS:
        return len(user.users) == 1 and is_quantizing_user(next(iter(user.users)))
    return is_quantizing_user(user)


def _is_fused_activation(node: Node) -> bool:
    producer = node.args[0] if node.args else None
    return (
        node.target in _FUSED_ACTIVATIONS
        and isinstance(producer, Node)
        and producer.target in _STATIC_QUANT
        and len(producer.users) == 1
        and _int8_pattern(producer)
    )


def _int8_pattern(node: Node) -> bool:
    """dq on every tensor input (a float bias excepted), a quantize after, constraints met."""
    bias = argument(node, "bias") if node.target in _WEIGHTED else None
    inputs = [a for a in tensor_inputs(node) if a is not bias]
    return (
        bool(inputs)
        and all(is_quantized_edge(a) for a in inputs)
        and _ends_in_quantize(node)
        and _constraints_hold(node)
    )


def predict_xnnpack(node: Node) -> str:
    """What the XNNPACK partitioner will do with ``node`` (see the module docstring)."""
    if node.target in _STATIC_QUANT:
        if _is_fused_activation(node):
            return INT8 + " (fused)"
        if _int8_pattern(node):
            return INT8
    if node.target in _STATIC_QUANT or node.target in _FP32_ONLY:
        return FP32
    return NOT_DELEGATED
