"""The X86 Inductor recipe as data: which aten patterns become one int8 kernel, in what order.

Inductor's x86 quantization passes (``torch/_inductor/fx_passes/quantization.py``) fuse
``dequantize -> conv/linear [-> add] [-> unary]`` into one oneDNN kernel that reads int8 and
writes int8 or float. The recipe therefore quantizes the *inputs* of a fused pattern (the
activation and the weight) and leaves its output float: whoever consumes it quantizes its own
input. A pattern's last node is remembered as a "quantized output", which is what lets the
int8-in/int8-out ops after it (pooling, flatten, cat) keep running on int8 (see
:mod:`quantizers.x86_inductor.quantizer`).

:data:`FUSION_RULES` is rows of (pattern, action) in the core's pattern language
(:mod:`pt2e_quant.graph.patterns`), run by its driver. Each pattern is a
:func:`~pt2e_quant.graph.patterns.chain` ``anchor -> [batch_norm] -> [add] -> [unary]``; the
rows run in table order over the whole graph, so longer patterns claim their nodes before
shorter ones (``conv -> add -> relu`` before ``conv -> add`` before ``conv``). The order and
the post-op sets are torchao's ``X86InductorQuantizer`` recipe, recognised here from the aten
graph::

    conv2d ─┬─ add ─ relu                         conv2d_add_relu  (add's other input quantized)
            ├─ add                                conv2d_add
            └─ relu / hardtanh / relu6 / hardswish / silu      conv2d_unary
    conv1d ─── relu                               conv1d_relu
    conv1d / conv2d alone                         conv
    linear ─┬─ add [─ relu]                       linear_add(_relu)  (add's other input float)
            ├─ relu / leaky_relu / tanh / gelu    linear_unary
            └─ (alone)                            linear
    addmm(bias, x, w)                             addmm  (our addition: GPT-2's Conv1D)

``addmm`` is not in torchao's recipe. Hugging Face GPT-2's ``Conv1D`` exports as ``addmm(bias,
x, w)`` with its weight stored (in, out), so without it a GPT-2 gets no int8 matmul. It is
quantized like a linear, the weight per output channel along its columns (axis 1). Inductor
fuses only the linear form (``dequantize -> addmm <- permute <- dequantize_per_channel(axis
0)``), so :func:`~quantizers.x86_inductor.inductor_rewrites.rewrite_for_inductor` turns a
converted addmm into that linear before compiling. It has no post-op rows: in GPT-2 a view
sits between the addmm and its gelu or residual add.

Every step of a pattern must be the *sole* user of the step before it: a conv whose output is
also read elsewhere cannot hand that reader a fused, post-op'ed value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.fx import Node

from pt2e_quant.contract.annotation import annotate_input, annotate_output
from pt2e_quant.graph import patterns
from pt2e_quant.graph.aten_args import argument, module_constant
from pt2e_quant.graph.patterns import Match, chain, is_float_tensor, then, then_either_operand
from pt2e_quant.ops.families import (
    ADAPTIVE_AVG_POOL2D_OPS,
    ADD_OPS,
    ADDMM_OPS,
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
from quantizers.config import QuantizationConfig

__all__ = [
    "ADDMM_OPS",
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
    "annotate_fusion",
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
    INT8_IN_INT8_OUT_OPS
    | CONV1D_OPS
    | CONV2D_OPS
    | LINEAR_OPS
    | ADDMM_OPS
    | X86_MUL_OPS
    | MATMUL_OPS
)


#: Ops quantized only as the post-op of a conv / linear pattern (they have no rule of their own).
POST_OPS = CONV2D_UNARY_OPS | LINEAR_UNARY_OPS | ADD_OPS | BATCH_NORM_OPS


@dataclass(frozen=True)
class FusionRule(patterns.Rule):
    """One row of the recipe: a chain ``anchor -> [batch_norm] -> [add] -> [unary]`` and
    :func:`annotate_fusion`.

    ``quantize_extra_input``: quantize the add's other operand (conv: yes; linear: no, the
    recipe keeps it float for accuracy). ``qat_only`` rows match the batch norm that QAT keeps
    after the conv; their output is observed explicitly (``quantize_output``), as the peer's
    QAT recipe does.
    """

    anchor: str | None = "anchor"
    quantize_extra_input: bool = True
    quantize_output: bool = False
    qat_only: bool = False


def _other_operand(binary: Node, operand: Node) -> Node | None:
    """The add's operand that is not ``operand``, if it is a float tensor (not a scalar)."""
    lhs, rhs = binary.args[0], binary.args[1] if len(binary.args) > 1 else None
    if len(binary.args) > 2 or binary.kwargs.get("alpha", 1) != 1:
        return None  # add(x, y, alpha=2) is not the fused kernel's plain sum
    other = rhs if lhs is operand else lhs if rhs is operand else None
    return other if is_float_tensor(other) else None


def _adds_a_tensor(anchor: Node, binary: Node, bn: Node | None = None, **_: Node) -> bool:
    """The add sums the pattern with a float tensor, as the fused kernel does."""
    return _other_operand(binary, bn if bn is not None else anchor) is not None


def annotate_fusion(match: Match, rule: FusionRule, config: QuantizationConfig) -> None:
    """Quantize the anchor's activation and weight (and the add's other operand if asked)."""
    anchor, binary = match["anchor"], match.get("binary")
    specs = [
        (anchor.args[0], config.input_activation),
        (anchor.args[1], config.weight),
        (argument(anchor, "bias"), config.bias),
    ]
    for value, spec in specs:
        if isinstance(value, Node) and spec is not None:
            annotate_input(anchor, value, spec)
    if binary is not None and rule.quantize_extra_input:
        extra = _other_operand(binary, match.get("bn", anchor))
        if config.input_activation is not None and extra is not None:
            annotate_input(binary, extra, config.input_activation)
    if rule.quantize_output and config.output_activation is not None:
        annotate_output(match.root, config.output_activation)


def _adds_a_constant_matrix(anchor: Node, **_: Node) -> bool:
    """``addmm(bias, x, w)`` computing ``bias + x @ w``: a constant 2-D weight (a linear's,
    stored transposed), a 1-D bias, ``beta = alpha = 1``; what a linear with a bias computes."""
    if argument(anchor, "beta", 1) != 1 or argument(anchor, "alpha", 1) != 1:
        return False
    bias, activation, weight = anchor.args[:3]
    value = None
    if isinstance(bias, Node):
        value = bias.meta.get("val", module_constant(bias.graph.owning_module, bias))
    return (
        is_float_tensor(activation)
        and isinstance(weight, Node)
        and weight.op == "get_attr"
        and value is not None
        and value.dim() == 1
    )


def annotate_addmm(match: Match, rule: FusionRule, config: QuantizationConfig) -> None:
    """Quantize ``addmm(bias, x, w)`` as a linear: ``x``, and ``w`` per column (axis 1)."""
    anchor = match["anchor"]
    bias, activation, weight = anchor.args[:3]
    weight_spec = config.weight
    if weight_spec is not None and weight_spec.ch_axis is not None:
        weight_spec = dataclasses.replace(weight_spec, ch_axis=1)
    for value, spec in ((activation, config.input_activation), (weight, weight_spec)):
        if spec is not None:
            annotate_input(anchor, value, spec)
    if config.bias is not None:
        annotate_input(anchor, bias, config.bias)


_CONV_ANY = CONV1D_OPS | CONV2D_OPS
#: QAT keeps the module's batch norm as ``aten.batch_norm`` (not its tuple-returning forms)
_BATCH_NORM = then(frozenset({_aten.batch_norm.default}), name="bn")
_ADD = then_either_operand(ADD_OPS, name="binary")

FUSION_RULES: tuple[FusionRule, ...] = (
    # QAT keeps batch norm between the conv and its post-ops (folded later by convert).
    FusionRule(
        "qat_conv2d_bn_add_relu",
        chain(CONV2D_OPS, _BATCH_NORM, _ADD, then(RELU_OPS)),
        annotate_fusion,
        _adds_a_tensor,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "qat_conv2d_bn_add",
        chain(CONV2D_OPS, _BATCH_NORM, _ADD),
        annotate_fusion,
        _adds_a_tensor,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "qat_conv2d_bn_unary",
        chain(CONV2D_OPS, _BATCH_NORM, then(CONV2D_UNARY_OPS)),
        annotate_fusion,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "qat_conv2d_bn",
        chain(CONV2D_OPS, _BATCH_NORM),
        annotate_fusion,
        quantize_output=True,
        qat_only=True,
    ),
    FusionRule(
        "conv2d_add_relu", chain(CONV2D_OPS, _ADD, then(RELU_OPS)), annotate_fusion, _adds_a_tensor
    ),
    FusionRule("conv2d_add", chain(CONV2D_OPS, _ADD), annotate_fusion, _adds_a_tensor),
    FusionRule("conv2d_unary", chain(CONV2D_OPS, then(CONV2D_UNARY_OPS)), annotate_fusion),
    FusionRule("conv1d_relu", chain(CONV1D_OPS, then(RELU_OPS)), annotate_fusion),
    FusionRule("conv", chain(_CONV_ANY), annotate_fusion),
    FusionRule(
        "linear_add_relu",
        chain(LINEAR_OPS, _ADD, then(RELU_OPS)),
        annotate_fusion,
        _adds_a_tensor,
        quantize_extra_input=False,
    ),
    FusionRule(
        "linear_add",
        chain(LINEAR_OPS, _ADD),
        annotate_fusion,
        _adds_a_tensor,
        quantize_extra_input=False,
    ),
    FusionRule("linear_unary", chain(LINEAR_OPS, then(LINEAR_UNARY_OPS)), annotate_fusion),
    FusionRule("linear", chain(LINEAR_OPS), annotate_fusion),
    FusionRule("addmm", chain(ADDMM_OPS), annotate_addmm, _adds_a_constant_matrix),
)
