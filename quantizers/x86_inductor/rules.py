"""The X86 Inductor recipe as data: which aten patterns become one int8 kernel, in what order.

Inductor's x86 quantization passes (``torch/_inductor/fx_passes/quantization.py``) fuse
``dequantize -> conv/linear [-> add] [-> unary]`` into one oneDNN kernel that reads int8 and
writes int8 or float. The recipe therefore quantizes the *inputs* of a fused pattern (the
activation and the weight) and leaves its output float: whoever consumes it quantizes its own
input. A pattern's last node is remembered as a "quantized output", which is what lets the
int8-in/int8-out ops after it (pooling, flatten, cat) keep running on int8 (see
:mod:`quantizers.x86_inductor.quantizer`).

Each :class:`FusionRule` row reads ``anchor -> [batch_norm] -> [add] -> [unary]``; the rows run
in table order over the whole graph, so longer patterns claim their nodes before shorter ones
(``conv -> add -> relu`` before ``conv -> add`` before ``conv``). The order and the post-op
sets are torchao's ``X86InductorQuantizer`` recipe, recognised here from the aten graph::

    conv2d ─┬─ add ─ relu                         conv2d_add_relu  (add's other input quantized)
            ├─ add                                conv2d_add
            └─ relu / hardtanh / relu6 / hardswish / silu      conv2d_unary
    conv1d ─── relu                               conv1d_relu
    conv1d / conv2d alone                         conv
    linear ─┬─ add [─ relu]                       linear_add(_relu)  (add's other input float)
            ├─ relu / leaky_relu / tanh / gelu    linear_unary
            └─ (alone)                            linear

Every step of a pattern must be the *sole* user of the step before it: a conv whose output is
also read elsewhere cannot hand that reader a fused, post-op'ed value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import Node

from pt2e_quant.graph.patterns import is_call, is_float_tensor, next_op
from pt2e_quant.ops.families import (
    ADAPTIVE_AVG_POOL2D_OPS,
    ADD_OPS,
    AVG_POOL2D_OPS,
    BATCH_NORM_OPS,
    CONV1D_OPS,
    CONV2D_OPS,
    FLATTEN_OPS,
    GELU_OPS,
    HARDSWISH_OPS,
    HARDTANH_OPS,
    LEAKY_RELU_OPS,
    LINEAR_OPS,
    MATMUL_OPS,
    MAX_POOL2D_OPS,
    MUL_OPS,
    RELU6_OPS,
    RELU_OPS,
    SILU_OPS,
    TANH_OPS,
)

__all__ = [
    "CONV1D_OPS",
    "CONV2D_OPS",
    "MATMUL_OPS",
    "X86_MUL_OPS",
    "MAX_POOL_OPS",
    "INT8_IN_INT8_OUT_OPS",
    "QUANTIZABLE_OPS",
    "POST_OPS",
    "Match",
    "FusionRule",
    "FUSION_RULES",
]

_aten = torch.ops.aten

#: only the functional mul: an in-place mul our prepare could not functionalize aliases its input
X86_MUL_OPS = frozenset(op for op in MUL_OPS if not op._schema.is_mutable)
MAX_POOL_OPS = MAX_POOL2D_OPS

#: ``F.relu6`` exports as ``aten.relu6`` (``nn.ReLU6`` as hardtanh); Inductor lowers both alike
CONV2D_UNARY_OPS = RELU_OPS | HARDTANH_OPS | RELU6_OPS | HARDSWISH_OPS | SILU_OPS
LINEAR_UNARY_OPS = RELU_OPS | LEAKY_RELU_OPS | TANH_OPS | GELU_OPS

#: Ops Inductor runs directly on int8 when given int8: their output shares the input's qparams.
INT8_IN_INT8_OUT_OPS = (
    MAX_POOL2D_OPS
    | frozenset({_aten.cat.default})  # torchao's recipe: not the concat alias
    | AVG_POOL2D_OPS
    | ADAPTIVE_AVG_POOL2D_OPS
    | FLATTEN_OPS
)

#: Every op the recipe can quantize; a flatten only stays int8 if one of its users is here.
QUANTIZABLE_OPS = (
    INT8_IN_INT8_OUT_OPS | CONV1D_OPS | CONV2D_OPS | LINEAR_OPS | X86_MUL_OPS | MATMUL_OPS
)


#: Ops quantized only as the post-op of a conv / linear pattern (they have no rule of their own).
POST_OPS = CONV2D_UNARY_OPS | LINEAR_UNARY_OPS | ADD_OPS | BATCH_NORM_OPS


@dataclass(frozen=True)
class Match:
    """One occurrence of a fusion pattern.

    ``nodes`` lists the pattern in data-flow order, anchor first; ``output`` is the last of
    them (the fused kernel's result); ``extra_input`` is the add's other operand, if any.
    """

    anchor: Node
    nodes: tuple[Node, ...]
    binary: Node | None = None
    extra_input: Node | None = None

    @property
    def output(self) -> Node:
        return self.nodes[-1]


@dataclass(frozen=True)
class FusionRule:
    """``anchor -> [batch_norm] -> [add] -> [unary]``: one row of the recipe.

    ``quantize_extra_input``: quantize the add's other operand (conv: yes; linear: no, the
    recipe keeps it float for accuracy). ``qat_only`` rows match the batch norm that QAT keeps
    after the conv; their output is observed explicitly (``quantize_output``), as the peer's
    QAT recipe does.
    """

    name: str
    anchors: frozenset
    batch_norm: bool = False
    binary: bool = False
    unary: frozenset = frozenset()
    quantize_extra_input: bool = True
    quantize_output: bool = False
    qat_only: bool = False

    def match(self, anchor: Node) -> Match | None:
        if not is_call(anchor, self.anchors):
            return None
        nodes = [anchor]
        if self.batch_norm:
            bn = next_op(anchor, BATCH_NORM_OPS)
            if bn is None or bn.target != _aten.batch_norm.default:
                return None
            nodes.append(bn)
        binary = extra = None
        if self.binary:
            binary = next_op(nodes[-1], ADD_OPS)
            if binary is None:
                return None
            extra = _other_operand(binary, nodes[-1])
            if extra is None:
                return None
            nodes.append(binary)
        if self.unary:
            post_op = next_op(nodes[-1], self.unary)
            if post_op is None:
                return None
            nodes.append(post_op)
        return Match(anchor, tuple(nodes), binary, extra)


def _other_operand(binary: Node, operand: Node) -> Node | None:
    """The add's operand that is not ``operand``, if it is a float tensor (not a scalar)."""
    lhs, rhs = binary.args[0], binary.args[1] if len(binary.args) > 1 else None
    if len(binary.args) > 2 or binary.kwargs.get("alpha", 1) != 1:
        return None  # add(x, y, alpha=2) is not the fused kernel's plain sum
    other = rhs if lhs is operand else lhs if rhs is operand else None
    return other if is_float_tensor(other) else None


_CONV_ANY = CONV1D_OPS | CONV2D_OPS

FUSION_RULES: tuple[FusionRule, ...] = (
    # QAT keeps batch norm between the conv and its post-ops (folded later by convert).
    FusionRule(
        "qat_conv2d_bn_add_relu",
        CONV2D_OPS,
        batch_norm=True,
        binary=True,
        unary=RELU_OPS,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "qat_conv2d_bn_add",
        CONV2D_OPS,
        batch_norm=True,
        binary=True,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "qat_conv2d_bn_unary",
        CONV2D_OPS,
        batch_norm=True,
        unary=CONV2D_UNARY_OPS,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule("qat_conv2d_bn", CONV2D_OPS, batch_norm=True, quantize_output=True, qat_only=True),
    FusionRule("conv2d_add_relu", CONV2D_OPS, binary=True, unary=RELU_OPS),
    FusionRule("conv2d_add", CONV2D_OPS, binary=True),
    FusionRule("conv2d_unary", CONV2D_OPS, unary=CONV2D_UNARY_OPS),
    FusionRule("conv1d_relu", CONV1D_OPS, unary=RELU_OPS),
    FusionRule("conv", _CONV_ANY),
    FusionRule(
        "linear_add_relu", LINEAR_OPS, binary=True, unary=RELU_OPS, quantize_extra_input=False
    ),
    FusionRule("linear_add", LINEAR_OPS, binary=True, quantize_extra_input=False),
    FusionRule("linear_unary", LINEAR_OPS, unary=LINEAR_UNARY_OPS),
    FusionRule("linear", LINEAR_OPS),
)
