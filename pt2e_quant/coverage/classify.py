"""Which aten ops are *compute ops*: the rows of a coverage report.

A coverage report answers "was every op that costs time quantized?", so it lists convolutions,
matrix products, element-wise arithmetic, pooling, normalisation and activations, and leaves
out shape ops (view, permute, flatten, getitem, ...) whose cost and quantization follow their
producer. The table is data keyed by the aten overload, each mapped to a family name that the
report shows and the predictions use. Every family comes from :mod:`pt2e_quant.ops.families`,
so "conv" means the same overloads here as in the rules.
"""

from __future__ import annotations

from typing import Any

from torch.fx import Node

from pt2e_quant.ops.families import (
    ACTIVATION_OPS,
    ADD_OPS,
    ATTENTION_OPS,
    CAT_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    DIV_OPS,
    EINSUM_OPS,
    EMBEDDING_OPS,
    LINEAR_OPS,
    MATMUL_OPS,
    MEAN_OPS,
    MM_OPS,
    MUL_OPS,
    NORM_OPS,
    POOL_OPS,
    RECURRENT_OPS,
    STACK_OPS,
    SUB_OPS,
    SUM_OPS,
    UPSAMPLE_OPS,
)

__all__ = ["COMPUTE_OPS", "family", "is_compute_op"]

_FAMILIES: dict[str, frozenset] = {
    "conv": CONV_OPS,
    "conv_transpose": CONV_TRANSPOSE_OPS,
    "linear": LINEAR_OPS,
    "matmul": MATMUL_OPS | MM_OPS | EINSUM_OPS,
    "add": ADD_OPS,
    "sub": SUB_OPS,
    "mul": MUL_OPS,
    "div": DIV_OPS,
    "cat": CAT_OPS | STACK_OPS,
    "pool": POOL_OPS,
    "reduce": MEAN_OPS | SUM_OPS,
    "embedding": EMBEDDING_OPS,
    "norm": NORM_OPS,
    "activation": ACTIVATION_OPS,
    "attention": ATTENTION_OPS,
    "recurrent": RECURRENT_OPS,
    "upsample": UPSAMPLE_OPS,
}

#: aten overload -> family name ("conv", "matmul", "activation", ...)
COMPUTE_OPS: dict[Any, str] = {op: name for name, ops in _FAMILIES.items() for op in ops}


def is_compute_op(node: Node) -> bool:
    """``node`` calls one of :data:`COMPUTE_OPS`."""
    return node.op == "call_function" and node.target in COMPUTE_OPS


def family(node: Node) -> str:
    """The family of a compute op (``"conv"``, ``"activation"``, ...)."""
    return COMPUTE_OPS[node.target]
