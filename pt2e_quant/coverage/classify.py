"""Which aten ops are *compute ops*: the rows of a coverage report.

A coverage report answers "was every op that costs time quantized?", so it lists convolutions,
matrix products, element-wise arithmetic, pooling, normalisation and activations, and leaves
out shape ops (view, permute, flatten, getitem, ...) whose cost and quantization follow their
producer. The table is data keyed by the aten overload, each mapped to a family name that the
report shows and the predictions use. Op families the backends already define are imported
from them, so "conv" means the same overloads here as in the rules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node

from quantizers.embedding import EMBEDDING_OPS
from quantizers.patterns import (
    ADD_OPS,
    BATCH_NORM_OPS,
    CAT_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    HARDTANH_OPS,
    LINEAR_OPS,
    MUL_OPS,
    RELU_OPS,
)
from quantizers.x86_inductor_rules import MATMUL_OPS

__all__ = ["COMPUTE_OPS", "family", "is_compute_op"]

_aten = torch.ops.aten


def _overloads(*names: str) -> frozenset:
    """``"sub.Tensor"`` -> ``aten.sub.Tensor``; names this torch build lacks are skipped."""
    found = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(_aten, packet, None), overload or "default", None)
        if op is not None:
            found.add(op)
    return frozenset(found)


_FAMILIES: dict[str, frozenset] = {
    "conv": CONV_OPS,
    "conv_transpose": CONV_TRANSPOSE_OPS,
    "linear": LINEAR_OPS,
    "matmul": MATMUL_OPS | _overloads("mm", "bmm", "addmm", "baddbmm", "einsum"),
    "add": ADD_OPS,
    "sub": _overloads("sub.Tensor", "sub_.Tensor", "rsub.Scalar"),
    "mul": MUL_OPS,
    "div": _overloads("div.Tensor", "div_.Tensor", "div.Tensor_mode"),
    "cat": CAT_OPS | _overloads("stack"),
    "pool": _overloads(
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "adaptive_max_pool2d",
    ),
    "reduce": _overloads("mean.dim", "mean.default", "sum.dim_IntList"),
    "embedding": EMBEDDING_OPS,
    "norm": BATCH_NORM_OPS
    | _overloads("layer_norm", "group_norm", "instance_norm", "rms_norm", "native_layer_norm"),
    "activation": RELU_OPS
    | HARDTANH_OPS
    | _overloads(
        "relu6",
        "hardswish",
        "hardswish_",
        "hardsigmoid",
        "hardsigmoid_",
        "silu",
        "silu_",
        "gelu",
        "sigmoid",
        "tanh",
        "leaky_relu",
        "elu",
        "prelu",
        "mish",
        "clamp",
        "softmax.int",
        "_softmax",
        "log_softmax.int",
    ),
    "attention": _overloads("scaled_dot_product_attention"),
    "recurrent": _overloads("lstm.input", "gru.input", "rnn_tanh.input"),
    "upsample": _overloads("upsample_nearest2d.vec", "upsample_bilinear2d.vec"),
}

#: aten overload -> family name ("conv", "matmul", "activation", ...)
COMPUTE_OPS: dict[Any, str] = {op: name for name, ops in _FAMILIES.items() for op in ops}


def is_compute_op(node: Node) -> bool:
    """``node`` calls one of :data:`COMPUTE_OPS`."""
    return node.op == "call_function" and node.target in COMPUTE_OPS


def family(node: Node) -> str:
    """The family of a compute op (``"conv"``, ``"activation"``, ...)."""
    return COMPUTE_OPS[node.target]
