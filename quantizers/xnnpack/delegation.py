"""Predicting, per compute op, what ExecuTorch's XNNPACK partitioner will do with it.

Facts read from ExecuTorch 1.5.1,
``executorch/backends/xnnpack/partition/config/{__init__,xnnpack_config,gemm_configs,
generic_node_configs,node_configs}.py`` (``ALL_PARTITIONER_CONFIGS``, each config's
``supported_precision_types`` and ``check_constraints``), restated here as our own table keyed
by the aten op *before* edge lowering (``conv2d`` reaches the partitioner as ``convolution``,
``adaptive_avg_pool2d`` to 1x1 as ``mean.dim``, ``matmul`` as ``mm`` or ``bmm``), and checked
against real lowering by ``tests/quantizers/xnnpack/test_delegation_against_lowering.py``.

An op is delegated only if every check below holds; otherwise it stays in the ExecuTorch
program, whatever its precision ("not delegated"):

* **dtypes** (every config): each tensor read through a positional argument is float32 or
  float16, all of one dtype and not empty, and so is every output. An integer ``add`` (index
  arithmetic), a boolean mask or a ``SymInt`` argument keeps the op out of XNNPACK;
* **per-op constraints**: conv 1-D or 2-D, a transposed conv with per-channel weights only
  with ``groups == 1`` and channel axis 1; ``add`` / ``sub`` need ``alpha == 1``; ``cat`` two
  inputs or more; ``max_pool2d`` a stride no larger than the kernel (``ceil_mode`` only on
  static shapes); ``avg_pool2d`` no ``ceil_mode``, no ``count_include_pad`` with padding, no
  ``divisor_override``; ``mean.dim`` a 4-D input reduced over dims 2, 3 with ``keepdim`` and
  no ``dtype``; ``adaptive_avg_pool2d`` to 1x1; ``softmax`` over the last dim; ``prelu`` and
  every linear / conv / ``mm`` a constant weight (and bias); ``matmul`` a constant weight when
  it is 2-D (it becomes ``mm``; 3-D and up become ``bmm``, which takes any operand).

Then the precision:

* **int8, static**: the config supports ``STATIC_QUANT``, every input is a dequantize (a
  linear / conv bias excepted) and the only user is a quantize, possibly through one fused
  activation (relu / hardtanh). In a prepared model observers stand for the q/dq ops. The
  partitioner reads the graph, not the annotations: an op the quantizer left float between a
  dq and a q runs int8 all the same;
* **int8, dynamic**: a linear or conv whose weight is a dequantize and whose activation is a
  dequantize with run-time qparams (``choose_qparams -> q -> dq``, per tensor or per token).
  XNNPACK needs per-channel weights for it, or for a linear int4 groups of a multiple of 32
  input columns (8da4w), and a 2-D conv that is not depthwise; otherwise a linear falls back to fp32
  (it is decomposed to ``addmm`` and delegated as a float op) and a conv is not delegated;
* **fp32**: any other op with an ``FP32`` config, including a static-quantized linear whose
  pattern is incomplete (decomposed to a float ``addmm``); a conv in that state is not
  delegated.

Prediction strings: ``"xnnpack int8"``, ``"xnnpack int8 (dynamic)"``, ``"xnnpack fp32"``,
``"not delegated"``; a fused activation reads ``"xnnpack int8 (fused)"``.
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
from pt2e_quant.fake_quantize import FakeQuantizeBase
from pt2e_quant.graph.aten_args import argument, attribute
from pt2e_quant.observer import ObserverBase, PerGroupMinMaxObserver
from pt2e_quant.ops.families import CONV_OPS, CONV_TRANSPOSE_OPS, LINEAR_OPS
from pt2e_quant.ops.qdq_ops import (
    DEQUANTIZE_PER_CHANNEL_ANY,
    DEQUANTIZE_PER_CHANNEL_GROUP,
    is_dequantize,
    is_dynamic_dequantize,
    is_quantize,
)

__all__ = ["INT8", "INT8_DYNAMIC", "FP32", "NOT_DELEGATED", "predict_xnnpack"]

INT8, FP32, NOT_DELEGATED = "xnnpack int8", "xnnpack fp32", "not delegated"
INT8_DYNAMIC = "xnnpack int8 (dynamic)"

_aten = torch.ops.aten

#: ops with a STATIC_QUANT config (Convolution, Linear, Addmm/MM, Add, Sub, Mul, Cat, ReLU,
#: Hardtanh, Clamp, MaxPool2d, MeanDim); each also has an FP32 config
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

#: ops with an FP32-only config (or decomposed into such ops): AvgPooling, BMM, BatchNorm, Div,
#: Gelu, Hardswish, LeakyReLU, Sigmoid, Softmax, Tanh, PReLU, UpsampleBilinear2d. ELU's config
#: is commented out of ``ALL_PARTITIONER_CONFIGS`` in 1.5.1, so ``elu`` is not here.
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
    _aten.prelu.default,
    _aten.upsample_bilinear2d.vec,
    _aten._native_batch_norm_legit_no_training.default,
}

_FUSED_ACTIVATIONS = {_aten.relu.default, _aten.hardtanh.default}
_CONVS = CONV_OPS | CONV_TRANSPOSE_OPS
#: the GEMM configs' ops (weight, bias and activation partitioned together)
_GEMMS = _CONVS | LINEAR_OPS | {_aten.mm.default, _aten.addmm.default}
_FLOAT_DTYPES = (torch.float32, torch.float16)


# -------------------------------------------------------------------------------- the graph


def _observer(node: object) -> torch.nn.Module | None:
    if not isinstance(node, Node) or node.op != "call_module":
        return None
    module = node.graph.owning_module.get_submodule(str(node.target))
    return module if isinstance(module, (ObserverBase, FakeQuantizeBase)) else None


def _behind_quantization(node: Node) -> Node:
    """The node a chain of q / dq / observers reads, i.e. the value they quantize."""
    while (is_dequantize(node) or is_quantize(node) or _observer(node)) and node.args:
        node = node.args[0]  # type: ignore[assignment]
    return node


def _is_constant(arg: object) -> bool:
    """A parameter, buffer or constant, possibly quantized (a ``get_attr`` behind q / dq)."""
    return isinstance(arg, Node) and _behind_quantization(arg).op == "get_attr"


def _weight_value(arg: Node) -> torch.Tensor | None:
    source = _behind_quantization(arg)
    if source.op == "get_attr":
        value = attribute(source.graph.owning_module, str(source.target))
        return value if isinstance(value, torch.Tensor) else None
    return example_value(source)


def _is_dynamic_edge(arg: object) -> bool:
    """The value read from ``arg`` is quantized with qparams computed at run time."""
    observer = _observer(arg)
    if observer is not None:
        return bool(getattr(observer, "is_dynamic", False))
    return is_dynamic_dequantize(arg)


def _is_per_channel(weight: Node) -> bool:
    observer = _observer(weight)
    if observer is not None:
        qscheme = getattr(observer, "qscheme", None)
        return qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
    return getattr(weight.target, "overloadpacket", None) is DEQUANTIZE_PER_CHANNEL_ANY


def _is_grouped_int4(weight: Node) -> bool:
    """int4 weights (-8..7 in int8) with groups of a multiple of 32 input columns: what
    XNNPACK's 4-bit dynamic linear kernels take."""
    observer = _observer(weight)
    if observer is not None:
        if not isinstance(observer, PerGroupMinMaxObserver):
            return False
        qrange, group_size = (observer.quant_min, observer.quant_max), observer.group_size
    elif weight.target == DEQUANTIZE_PER_CHANNEL_GROUP:
        qrange = (argument(weight, "quant_min"), argument(weight, "quant_max"))
        group_size = argument(weight, "group_size")
    else:
        return False
    return qrange == (-8, 7) and isinstance(group_size, int) and group_size % 32 == 0


def _is_grouped(weight: Node) -> bool:
    observer = _observer(weight)
    if observer is not None:
        return isinstance(observer, PerGroupMinMaxObserver)
    return weight.target == DEQUANTIZE_PER_CHANNEL_GROUP


def _channel_axis(weight: Node) -> int | None:
    observer = _observer(weight)
    if observer is not None:
        return getattr(observer, "ch_axis", None)
    return argument(weight, "axis") if is_dequantize(weight) else None


# ------------------------------------------------------------------------- common: dtypes


def _tensor_of(arg: Node) -> object:
    """What the partitioner will find in ``arg``'s ``val``: a dequantize yields float32 (its
    ``out_dtype`` when set), an observer the value it observes, a constant its tensor."""
    if is_dequantize(arg):
        return torch.empty(1, dtype=arg.kwargs.get("out_dtype") or torch.float32)
    if _observer(arg) is not None and arg.args:
        return _tensor_of(arg.args[0])  # type: ignore[arg-type]
    if arg.op == "get_attr":
        return attribute(arg.graph.owning_module, str(arg.target))
    return arg.meta.get("val")


def _is_empty(value: torch.Tensor) -> bool:
    numel = value.numel()
    return isinstance(numel, int) and numel == 0


def _dtypes_hold(node: Node) -> bool:
    """Every positional tensor input and every output is float32 / float16, all alike."""
    args = [a for arg in node.args for a in (arg if isinstance(arg, (list, tuple)) else [arg])]
    dtypes = set()
    for arg in args:
        if not isinstance(arg, Node):
            continue
        value = _tensor_of(arg)
        if value is None or isinstance(value, tuple):
            continue  # the partitioner skips inputs without a single value too
        if not isinstance(value, torch.Tensor) or _is_empty(value):
            return False
        dtypes.add(value.dtype)
    if len(dtypes) > 1 or not dtypes <= set(_FLOAT_DTYPES):
        return False
    output = node.meta.get("val")
    if output is None:
        return True
    outputs = output if isinstance(output, (tuple, list)) else (output,)
    return all(isinstance(v, torch.Tensor) and v.dtype in _FLOAT_DTYPES for v in outputs)


# ---------------------------------------------------------------- per-op constraints


def _pair(value: object) -> tuple[int, int]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return (items[0], items[-1]) if items else (1, 1)  # type: ignore[return-value]


def _has_dynamic_shape(node: Node) -> bool:
    value = node.meta.get("val")
    return isinstance(value, torch.Tensor) and not all(isinstance(d, int) for d in value.shape)


def _max_pool_holds(node: Node) -> bool:
    kernel = _pair(argument(node, "kernel_size"))
    stride = _pair(argument(node, "stride") or kernel)
    if argument(node, "ceil_mode", False) and _has_dynamic_shape(node):
        return False
    return stride[0] <= kernel[0] and stride[1] <= kernel[1]


def _avg_pool_holds(node: Node) -> bool:
    padding = _pair(argument(node, "padding", 0))
    padded = argument(node, "count_include_pad", True) and any(p != 0 for p in padding)
    return not (
        argument(node, "ceil_mode", False)
        or padded
        or argument(node, "divisor_override") is not None
    )


def _mean_holds(node: Node) -> bool:
    value = example_value(node.args[0])
    if value is None or value.dim() != 4 or node.kwargs.get("dtype") is not None:
        return False
    dims = sorted(d % 4 for d in node.args[1])  # type: ignore[union-attr]
    return dims == [2, 3] and bool(argument(node, "keepdim", False))


def _softmax_holds(node: Node) -> bool:
    value = example_value(node.args[0])
    dim = argument(node, "dim")
    return (
        value is not None
        and isinstance(dim, int)
        and dim % max(value.dim(), 1) == (value.dim() - 1)
    )


def _matmul_holds(node: Node) -> bool:
    """2-D ``other`` -> ``mm``, which needs a constant weight; 3-D and up -> ``bmm``."""
    other = example_value(node.args[1])
    return other is not None and (other.dim() >= 3 or _is_constant(node.args[1]))


def _gemm_operands(node: Node) -> tuple[object, object, object]:
    """(activation, weight, bias) of a linear / conv / mm / addmm."""
    if node.target == _aten.addmm.default:
        return node.args[1], node.args[2], node.args[0]
    if node.target == _aten.mm.default:
        return node.args[0], node.args[1], None
    return node.args[0], node.args[1], argument(node, "bias")


def _conv_holds(node: Node, weight: Node) -> bool:
    value = _weight_value(weight)
    if value is None or value.dim() - 2 > 2:
        return False
    if node.target in CONV_TRANSPOSE_OPS and _is_per_channel(weight):
        return argument(node, "groups", 1) == 1 and _channel_axis(weight) == 1
    return True


def _gemm_holds(node: Node) -> bool:
    _, weight, bias = _gemm_operands(node)
    if not _is_constant(weight) or (isinstance(bias, Node) and not _is_constant(bias)):
        return False
    return node.target not in _CONVS or _conv_holds(node, weight)  # type: ignore[arg-type]


_CONSTRAINTS = {
    _aten.add.Tensor: lambda n: n.kwargs.get("alpha", 1) == 1,
    _aten.sub.Tensor: lambda n: n.kwargs.get("alpha", 1) == 1,
    _aten.cat.default: lambda n: len(n.all_input_nodes) >= 2,
    _aten.max_pool2d.default: _max_pool_holds,
    _aten.avg_pool2d.default: _avg_pool_holds,
    _aten.mean.dim: _mean_holds,
    _aten.adaptive_avg_pool2d.default: lambda n: _pair(n.args[1]) == (1, 1),
    _aten.softmax.int: _softmax_holds,
    _aten._softmax.default: _softmax_holds,
    _aten.matmul.default: _matmul_holds,
    _aten.prelu.default: lambda n: _is_constant(n.args[1]),
}


def _constraints_hold(node: Node) -> bool:
    """The checks every config makes (dtypes) and the op's own (module docstring)."""
    if not _dtypes_hold(node):
        return False
    if node.target in _GEMMS:
        return _gemm_holds(node)
    check = _CONSTRAINTS.get(node.target)
    return check is None or check(node)


# --------------------------------------------------------------------------- precision


def _ends_in_quantize(node: Node) -> bool:
    """Only user is a quantize, directly or through one fused activation."""
    if len(node.users) != 1:
        return False
    (user,) = node.users
    if user.op == "call_function" and user.target in _FUSED_ACTIVATIONS:
        return len(user.users) == 1 and is_quantizing_user(next(iter(user.users)))
    return is_quantizing_user(user)


def _int8_pattern(node: Node) -> bool:
    """dq on every tensor input (a float bias excepted), a static quantize after."""
    bias = _gemm_operands(node)[2] if node.target in _GEMMS else None
    inputs = [a for a in tensor_inputs(node) if a is not bias]
    return (
        bool(inputs)
        and all(is_quantized_edge(a) and not _is_dynamic_edge(a) for a in inputs)
        and _ends_in_quantize(node)
    )


def _is_fused_activation(node: Node) -> bool:
    producer = node.args[0] if node.args else None
    return (
        node.target in _FUSED_ACTIVATIONS
        and isinstance(producer, Node)
        and producer.target in _STATIC_QUANT
        and len(producer.users) == 1
        and _constraints_hold(producer)
        and _int8_pattern(producer)
    )


def _is_depthwise(node: Node, weight: Node) -> bool:
    value = _weight_value(weight)
    groups = argument(node, "groups", 1)
    if value is None or value.dim() < 2 or groups < 1:
        return False
    transposed = node.target in CONV_TRANSPOSE_OPS
    per_group_inputs = value.shape[0] // groups if transposed else value.shape[1]
    return per_group_inputs == 1


def _predict_gemm(node: Node) -> str:
    activation, weight, _ = _gemm_operands(node)
    if not is_quantized_edge(weight):
        return FP32
    is_linear = node.target in LINEAR_OPS
    if _is_dynamic_edge(activation):
        if _is_grouped(weight):  # type: ignore[arg-type]
            supported = is_linear and _is_grouped_int4(weight)  # type: ignore[arg-type]
        else:
            supported = _is_per_channel(weight)  # type: ignore[arg-type]
        if node.target in _CONVS:
            value = _weight_value(weight)  # type: ignore[arg-type]
            two_d = value is not None and value.dim() == 4
            supported = supported and two_d and not _is_depthwise(node, weight)  # type: ignore[arg-type]
        if supported:
            return INT8_DYNAMIC
        return FP32 if is_linear else NOT_DELEGATED
    if _int8_pattern(node):
        return INT8
    return FP32 if is_linear else NOT_DELEGATED


def predict_xnnpack(node: Node) -> str:
    """What the XNNPACK partitioner will do with ``node`` (see the module docstring)."""
    if node.target not in _STATIC_QUANT and node.target not in _FP32_ONLY:
        return NOT_DELEGATED
    if not _constraints_hold(node):
        return NOT_DELEGATED
    if node.target in _GEMMS:
        return _predict_gemm(node)
    if node.target in _STATIC_QUANT:
        if _is_fused_activation(node):
            return INT8 + " (fused)"
        if _int8_pattern(node):
            return INT8
    return FP32
