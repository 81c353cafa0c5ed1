"""The op families and match helpers quantizer authors write rules with, under one import.

Kept here for quantizers written against earlier releases: the families are owned by
:mod:`pt2e_quant.ops.families` and the helpers by :mod:`pt2e_quant.graph.patterns`; new code
may import from those directly. Match on aten targets and data flow (``conv2d`` whose sole
user is ``relu``), never on ``source_fn_stack`` / ``nn_module_stack`` metadata.
"""

from __future__ import annotations

from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.patterns import any_annotated, is_call, is_float_tensor, next_op, sole_user
from pt2e_quant.ops.families import (
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

__all__ = [
    "CONV_OPS",
    "CONV_TRANSPOSE_OPS",
    "LINEAR_OPS",
    "ADD_OPS",
    "MUL_OPS",
    "RELU_OPS",
    "HARDTANH_OPS",
    "CAT_OPS",
    "BATCH_NORM_OPS",
    "is_call",
    "argument",
    "sole_user",
    "next_op",
    "is_float_tensor",
    "any_annotated",
]
