"""The one list of quantize / dequantize / choose-qparams operator overloads.

Inductor and ExecuTorch recognise quantized regions by matching these exact
``torch.ops.quantized_decomposed`` overloads, so every pass that emits or looks for
them goes through this module. Nothing else in the package spells them out.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import Node

from pt2e_quant.ops.compat import ensure_quantized_decomposed_ops

ensure_quantized_decomposed_ops()

_qd = torch.ops.quantized_decomposed

QUANTIZE_PER_TENSOR = _qd.quantize_per_tensor.default
QUANTIZE_PER_TENSOR_DYNAMIC = _qd.quantize_per_tensor.tensor
QUANTIZE_PER_CHANNEL = _qd.quantize_per_channel.default
DEQUANTIZE_PER_TENSOR = _qd.dequantize_per_tensor.default
DEQUANTIZE_PER_TENSOR_DYNAMIC = _qd.dequantize_per_tensor.tensor
DEQUANTIZE_PER_CHANNEL = _qd.dequantize_per_channel.default
QUANTIZE_PER_CHANNEL_GROUP = _qd.quantize_per_channel_group.default
DEQUANTIZE_PER_CHANNEL_GROUP = _qd.dequantize_per_channel_group.default
QUANTIZE_PER_TOKEN = _qd.quantize_per_token.default
DEQUANTIZE_PER_TOKEN = _qd.dequantize_per_token.default
CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC = _qd.choose_qparams_per_token_asymmetric.default
CHOOSE_QPARAMS_PER_TOKEN = _qd.choose_qparams_per_token.default
CHOOSE_QPARAMS = _qd.choose_qparams.tensor
CHOOSE_QPARAMS_SYMMETRIC = _qd.choose_qparams_symmetric.tensor
CONVERT_ELEMENT_TYPE = _qd.convert_element_type.no_fuse

#: the overload packets, which match every overload at once (scalar qparams, .tensor,
#: .tensor2): torchao's reference patterns strip the q/dq overloads and match these
QUANTIZE_PER_TENSOR_ANY = _qd.quantize_per_tensor
DEQUANTIZE_PER_TENSOR_ANY = _qd.dequantize_per_tensor
QUANTIZE_PER_CHANNEL_ANY = _qd.quantize_per_channel
DEQUANTIZE_PER_CHANNEL_ANY = _qd.dequantize_per_channel
CHOOSE_QPARAMS_ANY = _qd.choose_qparams

QUANTIZE_OPS: frozenset = frozenset(
    {
        QUANTIZE_PER_TENSOR,
        QUANTIZE_PER_TENSOR_DYNAMIC,
        _qd.quantize_per_tensor.tensor2,
        QUANTIZE_PER_CHANNEL,
        QUANTIZE_PER_CHANNEL_GROUP,
        QUANTIZE_PER_TOKEN,
    }
)
DEQUANTIZE_OPS: frozenset = frozenset(
    {
        DEQUANTIZE_PER_TENSOR,
        DEQUANTIZE_PER_TENSOR_DYNAMIC,
        _qd.dequantize_per_tensor.tensor2,
        DEQUANTIZE_PER_CHANNEL,
        DEQUANTIZE_PER_CHANNEL_GROUP,
        DEQUANTIZE_PER_TOKEN,
    }
)
CHOOSE_QPARAMS_OPS: frozenset = frozenset(
    {
        CHOOSE_QPARAMS,
        CHOOSE_QPARAMS_SYMMETRIC,
        CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC,
        CHOOSE_QPARAMS_PER_TOKEN,
    }
)

#: choose_qparams overload per activation qscheme, for dynamic quantization.
CHOOSE_QPARAMS_FOR_QSCHEME = {
    torch.per_tensor_affine: CHOOSE_QPARAMS,
    torch.per_tensor_symmetric: CHOOSE_QPARAMS_SYMMETRIC,
}

#: choose_qparams overload per qscheme of a per-token activation (the qscheme of each token):
#: XNNPACK's asymmetric one, or the symmetric one (zero points 0) Inductor's ``_int_mm`` takes.
CHOOSE_QPARAMS_PER_TOKEN_FOR_QSCHEME = {
    torch.per_tensor_affine: CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC,
    torch.per_tensor_symmetric: CHOOSE_QPARAMS_PER_TOKEN,
}


def _torchao_overloads(name: str) -> frozenset:
    """``torch.ops.torchao.<name>`` (the packet and its overloads), once torchao registered it.
    Looked up on each call: torchao may be imported after pt2e_quant."""
    namespace = torch.ops.torchao
    if not hasattr(namespace, name):
        return frozenset()
    packet = getattr(namespace, name)
    return frozenset({packet, *(getattr(packet, overload) for overload in packet.overloads())})


def affine_quantize_ops() -> frozenset:
    """torchao's ``quantize_affine``, once torchao registered it.

    Only a foreign observer's own ``convert`` emits it (torchao's affine observers, QNN's
    per-block weight observer); convert folds it on constant weights like our quantize ops.
    """
    return _torchao_overloads("quantize_affine")


def affine_dequantize_ops() -> frozenset:
    """torchao's ``dequantize_affine``, the partner of :func:`affine_quantize_ops`."""
    return _torchao_overloads("dequantize_affine")


def _is_call_to(node: object, ops: frozenset) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in ops


def is_quantize(node: object) -> bool:
    """True for a quantize call: per tensor, per channel, per channel group or per token."""
    return _is_call_to(node, QUANTIZE_OPS)


def is_dequantize(node: object) -> bool:
    """True for a dequantize call: per tensor, per channel, per channel group or per token."""
    return _is_call_to(node, DEQUANTIZE_OPS)


def is_choose_qparams(node: object) -> bool:
    """True for the choose_qparams call that starts a dynamic q/dq chain."""
    return _is_call_to(node, CHOOSE_QPARAMS_OPS)


def is_qparam_getitem(node: object) -> bool:
    """True for ``getitem(choose_qparams(...), i)``, the scale / zero-point of a dynamic q."""
    return (
        isinstance(node, Node)
        and node.op == "call_function"
        and node.target is operator.getitem
        and is_choose_qparams(node.args[0])
    )


def is_quant_workflow_node(node: object) -> bool:
    """True for any node the quantization flow itself inserts at convert."""
    return (
        is_quantize(node)
        or is_dequantize(node)
        or is_choose_qparams(node)
        or (is_qparam_getitem(node))
    )


def is_dynamic_dequantize(node: object) -> bool:
    """True for a dq fed by ``choose_qparams -> getitem -> q``: its qparams are computed at run time."""
    if not is_dequantize(node):
        return False
    q = node.args[0]  # type: ignore[union-attr]
    return is_quantize(q) and is_qparam_getitem(q.args[1])  # type: ignore[union-attr]


_UNDERLYING_DTYPE = {
    torch.quint8: torch.uint8,
    torch.qint8: torch.int8,
    torch.qint32: torch.int32,
    torch.quint4x2: torch.uint8,
    torch.quint2x4: torch.uint8,
}

#: dtypes the decomposed q/dq ops carry, after mapping torch's quantized dtypes.
QUANTIZED_DTYPES = frozenset(
    {
        torch.uint8,
        torch.int8,
        torch.uint16,
        torch.int16,
        torch.int32,
        torch.float8_e5m2,
        torch.float8_e4m3fn,
    }
)


def to_plain_dtype(dtype: torch.dtype) -> torch.dtype:
    """Map torch.ao's ``quint8``-style dtypes to the plain integer dtype the ops expect."""
    return _UNDERLYING_DTYPE.get(dtype, dtype)


def is_quantized_dtype(dtype: torch.dtype) -> bool:
    """True when an observer of this dtype becomes a quantize / dequantize pair."""
    return to_plain_dtype(dtype) in QUANTIZED_DTYPES
