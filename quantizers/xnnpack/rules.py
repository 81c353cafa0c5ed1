"""The XNNPACK annotation rules: which aten patterns are quantized, and how, as one table.

"Which ops does XNNPACK quantize?" is answered by :data:`RULES`, read top to bottom: rows of
(pattern, annotator) in the core's pattern language (:mod:`pt2e_quant.graph.patterns`), run by
its driver. The order is ExecuTorch's ``SUPPORTED_PATTERNS`` order and it matters: a node
claimed by an earlier rule (``linear -> relu``) is skipped by later ones (``linear``). Each
pattern is a :func:`~pt2e_quant.graph.patterns.chain` anchored at one op (the conv, the add,
...) and followed by the ops fused after it, each the sole user of the one before::

    chain(CONV_OPS, _BATCH_NORM, _RELU)     conv -> batch_norm [-> getitem 0] -> relu

The anchor's config, found through the quantizer's scoping, decides how the whole pattern is
quantized (``XNNPACKQuantizer._pattern_config``: an operator-type config covers the anchor's
fused relu / batch norm, and a fused relu only joins when it sits in the anchor's module
scope). Patterns are recognised from aten targets and data flow only.

After the table has run, :func:`propagate_shared_qparams` lets ops that move values without
changing them (max_pool2d, view, permute, ...) reuse their producer's qparams, so XNNPACK can
run them on integers without a requantize.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import (
    QuantizationAnnotation,
    get_annotation,
    is_annotated,
    set_annotation,
)
from pt2e_quant.contract.specs import QuantizationSpec, QuantizationSpecBase, SharedQuantizationSpec
from pt2e_quant.graph import patterns
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.patterns import (
    ANY_USERS,
    Either,
    Op,
    Pattern,
    Users,
    chain,
    is_call,
    is_float_tensor,
    next_op,
    then,
)
from pt2e_quant.observer.granular import PerGroupMinMaxObserver
from pt2e_quant.ops.families import (
    ADAPTIVE_AVG_POOL2D_OPS,
    ADD_OPS,
    ADDMM_OPS,
    BATCH_NORM_OPS,
    CAT_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    FLATTEN_OPS,
    HARDTANH_OPS,
    LINEAR_OPS,
    MAX_POOL2D_OPS,
    MEAN_OPS,
    MUL_OPS,
    PERMUTE_OPS,
    RELU_OPS,
    RESHAPE_OPS,
    SLICE_OPS,
    SQUEEZE_OPS,
    TRANSPOSE_OPS,
    UNSQUEEZE_OPS,
    VIEW_OPS,
)
from quantizers.config import QuantizationConfig

__all__ = [
    "Rule",
    "RULES",
    "RULE_OPS",
    "SHARED_QPARAM_OPS",
    "propagate_shared_qparams",
]

_aten = torch.ops.aten

#: torch.histc (inside HistogramObserver) fails beyond this magnitude, so an add/mul with such
#: a constant operand (an attention mask's -1e30, say) is left float.
_HISTC_LIMIT = 3.4028235e15

ADAPTIVE_AVG_POOL_OPS = ADAPTIVE_AVG_POOL2D_OPS

#: Ops whose output reuses the qparams of their first input: ExecuTorch's list plus
#: ``unsqueeze`` and the other ``squeeze`` overloads. ExecuTorch leaves those float, so the
#: next op re-quantizes a pure view with new qparams; sharing keeps the view lossless
#: (deliberate difference; no zoo model has one). The in-place ``relu_`` needs no entry:
#: prepare has already made it ``relu``; of the dropouts, ExecuTorch lists plain ``dropout``.
SHARED_QPARAM_OPS = (
    frozenset({_aten.relu.default, _aten.dropout.default, _aten.dropout_.default})
    | HARDTANH_OPS
    | MAX_POOL2D_OPS
    | MEAN_OPS
    | PERMUTE_OPS
    | TRANSPOSE_OPS
    | SQUEEZE_OPS
    | UNSQUEEZE_OPS
    | ADAPTIVE_AVG_POOL2D_OPS
    | VIEW_OPS
    | RESHAPE_OPS
    | SLICE_OPS
    | FLATTEN_OPS
)

#: ``annotate(anchor, chain, config) -> annotated?``: ``chain`` holds the fused nodes after the
#: anchor (relu, batch norm), empty for a single-op pattern; the last node ends the pattern.
Annotator = Callable[[Node, list[Node], QuantizationConfig], bool]


@dataclass(frozen=True)
class Rule(patterns.Rule):
    """One row of the table: ``action`` is the pattern's :data:`Annotator`.

    ``dynamic`` rules also run for dynamic configs, which quantize only weighted ops.
    """

    anchor: str | None = "anchor"
    dynamic: bool = False


# ------------------------------------------------------------------------ weighted ops


def _weight_spec(anchor: Node, config: QuantizationConfig) -> QuantizationSpecBase | None:
    """Transposed-conv weights are (in, out/groups, ...): their output channels are axis 1."""
    spec = config.weight
    if spec is not None and is_call(anchor, CONV_TRANSPOSE_OPS):
        return dataclasses.replace(spec, ch_axis=1)
    return spec


def _dynamic_conv_unsupported(anchor: Node) -> bool:
    """XNNPACK's dynamically quantized conv is 2-D only, and not depthwise (weight C_in/g == 1)."""
    weight = argument(anchor, "weight")
    shape = getattr(weight.meta.get("val"), "shape", None)
    if shape is None:
        return False
    if len(shape) != 4:
        return True
    return not is_call(anchor, CONV_TRANSPOSE_OPS) and shape[1] == 1


def _groups_input_columns(spec: QuantizationSpecBase | None) -> bool:
    """Whether ``spec`` builds a per-group weight observer (groups of input columns)."""
    target = getattr(getattr(spec, "observer_or_fake_quant_ctr", None), "target", None)
    return isinstance(target, type) and issubclass(target, PerGroupMinMaxObserver)


def _annotate_weighted(anchor: Node, chain: list[Node], config: QuantizationConfig) -> bool:
    """conv / conv_transpose / linear: input, weight (and bias) edges; output at the pattern end.

    A conv whose only user is a relu is left to the fused conv-relu rule (in dynamic mode,
    where that rule does not run, such a conv stays float, as in ExecuTorch).
    """
    is_conv = is_call(anchor, CONV_OPS | CONV_TRANSPOSE_OPS)
    if not chain and is_conv and next_op(anchor, RELU_OPS) is not None:
        return False
    if is_call(anchor, CONV_TRANSPOSE_OPS) and argument(anchor, "groups", 1) != 1:
        return False
    if config.is_dynamic and is_conv and _dynamic_conv_unsupported(anchor):
        return False
    if is_conv and _groups_input_columns(config.weight):
        return False  # per-group weights are for linear layers (XNNPACK's 4-bit kernels)
    activation, weight = argument(anchor, "input"), argument(anchor, "weight")
    if not isinstance(activation, Node) or not isinstance(weight, Node):
        return False
    bias = argument(anchor, "bias")
    _claim_gemm(anchor, chain, config, (activation, weight, bias), _weight_spec(anchor, config))
    return True


def _claim_gemm(
    anchor: Node,
    chain: list[Node],
    config: QuantizationConfig,
    operands: tuple[Node, Node, object],
    weight_spec: QuantizationSpecBase | None,
) -> None:
    """Annotate a weighted op's (activation, weight, bias) inputs and the pattern's output."""
    activation, weight, bias = operands
    inputs: dict[Node, QuantizationSpecBase | None] = {
        activation: config.input_activation,
        weight: weight_spec,
    }
    if isinstance(bias, Node):
        inputs[bias] = config.bias
    _claim(anchor, QuantizationAnnotation(input_qspec_map=inputs))
    _claim_output(anchor, chain, config.output_activation)
    _claim_parameter_producers(weight, bias)


def _annotate_addmm(anchor: Node, chain: list[Node], config: QuantizationConfig) -> bool:
    """``addmm(bias, x, w)`` with a constant ``w`` of shape (in, out), as GPT-2's ``Conv1D``
    exports: quantized like a linear, its output channels being ``w``'s columns (axis 1).
    XNNPACK delegates it as a quantized fully-connected layer, static or dynamic. Per-group
    weights group a linear's (out, in) rows and are left to linear layers."""
    if argument(anchor, "beta", 1) != 1 or argument(anchor, "alpha", 1) != 1:
        return False
    bias, activation, weight = anchor.args[:3]
    if not (isinstance(activation, Node) and isinstance(weight, Node)) or weight.op != "get_attr":
        return False
    if _groups_input_columns(config.weight):
        return False
    weight_spec = config.weight
    if weight_spec is not None and weight_spec.ch_axis is not None:
        weight_spec = dataclasses.replace(weight_spec, ch_axis=1)
    _claim_gemm(anchor, chain, config, (activation, weight, bias), weight_spec)
    return True


def _claim_parameter_producers(*parameters: object) -> None:
    """Claim the ops that compute a weight or bias (``w * 0.5``, ``w + lora_delta``).

    Their value is already quantized as a weight by this pattern; left unclaimed, the mul /
    add rules would quantize it again as an activation, and the weight would be rounded
    twice (ExecuTorch claims them the same way).
    """
    for node in parameters:
        if isinstance(node, Node) and node.op == "call_function":
            _claim(node, get_annotation(node))


# -------------------------------------------------------------------------- binary ops


def _constant_value(node: Node) -> torch.Tensor | None:
    if node.op != "get_attr":
        return None
    owner: object = node.graph.owning_module
    for part in str(node.target).split("."):
        owner = getattr(owner, part, None)
    return owner if isinstance(owner, torch.Tensor) else None


def _observable(node: Node) -> bool:
    """A float32 tensor an observer can watch (not an out-of-histc-range scalar constant).

    float32 only, as in ExecuTorch: an add / mul on float16 or float64 values stays float
    (XNNPACK has no int8 kernel to hand them to, and no quantize op takes float64).
    """
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or value.dtype != torch.float32:
        return False
    value = _constant_value(node)
    return value is None or value.numel() != 1 or abs(value.item()) <= _HISTC_LIMIT


def _annotate_binary(anchor: Node, chain: list[Node], config: QuantizationConfig) -> bool:
    """add / mul (+ relu): every tensor operand and the pattern's output."""
    operands = [a for a in anchor.args[:2] if isinstance(a, Node)]
    if not all(_observable(a) for a in operands):
        return False
    inputs = dict.fromkeys(operands, config.input_activation)
    _claim(anchor, QuantizationAnnotation(input_qspec_map=inputs))
    _claim_output(anchor, chain, config.output_activation)
    return True


# ------------------------------------------------------------------ qparam-sharing ops


def _has_output_qparams(node: Node) -> bool:
    annotation = get_annotation(node)
    return annotation is not None and annotation._annotated and annotation.output_qspec is not None


def _traces_to_quantized_output(node: Node) -> bool:
    """``node``'s value comes, through qparam-sharing ops, from a node with output qparams."""
    seen: set[Node] = set()
    while isinstance(node, Node) and node not in seen:
        seen.add(node)
        if _has_output_qparams(node):
            return True
        if not is_call(node, SHARED_QPARAM_OPS):
            return False
        node = node.args[0]
    return False


def _annotate_cat(anchor: Node, chain: list[Node], config: QuantizationConfig) -> bool:
    """cat: all inputs and the output share one observer, owned by the first input that is
    already quantized upstream (so the group joins that producer's qparams), else the first."""
    inputs = list(anchor.args[0])
    spec = config.input_activation
    if spec is None or not inputs or not all(is_float_tensor(a) for a in inputs):
        return False
    source = next((a for a in inputs if _traces_to_quantized_output(a)), inputs[0])
    shared = SharedQuantizationSpec((source, anchor))
    qspecs = {a: (spec if a is source else shared) for a in inputs}
    _claim(anchor, QuantizationAnnotation(input_qspec_map=qspecs, output_qspec=shared))
    return True


def _annotate_pool(anchor: Node, chain: list[Node], config: QuantizationConfig) -> bool:
    """adaptive_avg_pool2d: output shares the input edge; that edge joins the producer's
    qparams when the producer is already quantized."""
    source = anchor.args[0]
    if config.input_activation is None or not isinstance(source, Node):
        return False
    spec = (
        SharedQuantizationSpec(source) if _has_output_qparams(source) else config.input_activation
    )
    _claim(
        anchor,
        QuantizationAnnotation(
            input_qspec_map={source: spec}, output_qspec=SharedQuantizationSpec((source, anchor))
        ),
    )
    return True


# ------------------------------------------------------------------------- the table


def _returns_tensor(node: Node) -> bool:
    return not isinstance(node.meta.get("val"), (tuple, list))


def _returns_tuple_read_once(node: Node) -> bool:
    """A batch norm's training form returns a tuple, of which exactly one ``getitem(bn, 0)``
    reads the output (the other items, its running statistics, may be read or not)."""
    if not isinstance(node.meta.get("val"), (tuple, list)):
        return False
    items = [u for u in node.users if u.target is operator.getitem and u.args[1] == 0]
    return len(items) == 1


def _then_batch_norm(previous: Pattern, users: Users) -> Pattern:
    """The chain link of a batch norm reading ``previous``; one returning a tuple continues
    through its ``getitem(bn, 0)``."""
    training_form = Op(
        BATCH_NORM_OPS, (previous, ...), users=ANY_USERS, check=_returns_tuple_read_once
    )
    return Either(
        Op(operator.getitem, (training_form, 0), users=users),
        Op(BATCH_NORM_OPS, (previous, ...), users=users, check=_returns_tensor),
    )


_BATCH_NORM = _then_batch_norm
_RELU = then(RELU_OPS)

RULES: tuple[Rule, ...] = (
    Rule("conv_bn_relu", chain(CONV_OPS, _BATCH_NORM, _RELU), _annotate_weighted),
    Rule("conv_bn", chain(CONV_OPS, _BATCH_NORM), _annotate_weighted),
    Rule(
        "conv_transpose_bn_relu",
        chain(CONV_TRANSPOSE_OPS, _BATCH_NORM, _RELU),
        _annotate_weighted,
    ),
    Rule("conv_transpose_bn", chain(CONV_TRANSPOSE_OPS, _BATCH_NORM), _annotate_weighted),
    # Not in ExecuTorch's table (deliberate addition): under QAT, linear + BatchNorm1d is
    # annotated as one pattern so prepare_qat_pt2e can simulate and convert can fold it, like
    # conv + bn. After PTQ's prepare-time fold there is no batch norm left to match.
    Rule("linear_bn_relu", chain(LINEAR_OPS, _BATCH_NORM, _RELU), _annotate_weighted),
    Rule("linear_bn", chain(LINEAR_OPS, _BATCH_NORM), _annotate_weighted),
    Rule("linear_relu", chain(LINEAR_OPS, _RELU), _annotate_weighted),
    Rule("linear", chain(LINEAR_OPS), _annotate_weighted, dynamic=True),
    # Not in ExecuTorch's table (deliberate addition): GPT-2's Conv1D exports as addmm. No
    # fused addmm + relu row: XNNPACK partitions that pair but its runtime refuses the fused
    # node (xnn_status_invalid_parameter), so a relu after addmm stays its own op.
    Rule("addmm", chain(ADDMM_OPS), _annotate_addmm, dynamic=True),
    Rule("conv", chain(CONV_OPS), _annotate_weighted, dynamic=True),
    Rule("conv_transpose", chain(CONV_TRANSPOSE_OPS), _annotate_weighted, dynamic=True),
    Rule("conv_relu", chain(CONV_OPS, _RELU), _annotate_weighted),
    Rule("conv_transpose_relu", chain(CONV_TRANSPOSE_OPS, _RELU), _annotate_weighted),
    Rule("adaptive_avg_pool2d", chain(ADAPTIVE_AVG_POOL_OPS), _annotate_pool),
    Rule("add_relu", chain(ADD_OPS, _RELU), _annotate_binary),
    Rule("add", chain(ADD_OPS), _annotate_binary),
    Rule("mul_relu", chain(MUL_OPS, _RELU), _annotate_binary),
    Rule("mul", chain(MUL_OPS), _annotate_binary),
    Rule("cat", chain(CAT_OPS), _annotate_cat),
)

#: Every op some rule can quantize: the anchors of :data:`RULES`, the ops they fuse, and the
#: qparam-sharing ops (quantized when their producer is). Coverage reports read it to tell
#: "no rule for this op" from "a rule exists but did not apply".
RULE_OPS: frozenset = frozenset().union(
    *(rule.targets for rule in RULES), RELU_OPS, BATCH_NORM_OPS, SHARED_QPARAM_OPS
)


# ---------------------------------------------------------------------- propagation


def propagate_shared_qparams(gm: GraphModule, excluded: Callable[[Node], bool]) -> bool:
    """Give qparam-sharing ops (:data:`SHARED_QPARAM_OPS`) their producer's qparams.

    In graph order, so ``conv -> max_pool2d -> flatten`` chains: the pool shares the conv's
    output, then the flatten the pool's. Nodes the user excluded (``excluded(node)``) stay
    float. Returns whether anything was annotated.
    """
    changed = False
    for node in gm.graph.nodes:
        if not is_call(node, SHARED_QPARAM_OPS) or is_annotated(node):
            continue
        producer = node.args[0]
        annotation = get_annotation(producer) if isinstance(producer, Node) else None
        if annotation is None or annotation.output_qspec is None or excluded(node):
            continue
        shared = SharedQuantizationSpec(producer)
        _claim(
            node, QuantizationAnnotation(input_qspec_map={producer: shared}, output_qspec=shared)
        )
        changed = True
    return changed


# --------------------------------------------------------------------------- helpers


def _claim(node: Node, annotation: QuantizationAnnotation | None) -> None:
    annotation = annotation if annotation is not None else QuantizationAnnotation()
    annotation._annotated = True
    set_annotation(node, annotation)


def _claim_output(anchor: Node, chain: list[Node], spec: QuantizationSpec | None) -> None:
    """Claim the fused nodes; the pattern's last node carries the output spec."""
    for node in chain:
        _claim(node, get_annotation(node))
    end = chain[-1] if chain else anchor
    annotation = get_annotation(end)
    assert annotation is not None  # claimed above
    annotation.output_qspec = spec
