"""Float vs dequantized weights, layer by layer: how much accuracy did weight rounding cost?

Activation comparisons (:mod:`pt2e_quant.debug.comparison`) mix two error sources: the layer's
rounded weights and the rounded activations flowing into it. :func:`extract_weights` isolates
the first. For every op of the converted model that reads a dequantized constant weight::

    get_attr _frozen_param0 (int8) ─ dequantize_per_channel(scales, zps, axis=0) ─ conv2d

it evaluates that constant chain, finds the float weight of the op with the same numeric debug
handle in the float model (falling back to the node name when handles are absent), and reports
SQNR, normalized L2 and cosine similarity: for the whole tensor and, for per-channel weights,
one SQNR per channel along the dequantize's ``axis``.

Batch norm: ``prepare_pt2e`` folds an inference batch norm into the conv / linear before it,
so the quantized weight is ``w * gamma / sqrt(var + eps)`` while the float model still holds
``w``. Comparing those would report a large, meaningless error. When the float op's only
reader is a batch norm that the quantized graph no longer has, the float weight is folded
with the same arithmetic prepare uses (bit-identical), and the result says ``bn_folded``.
When the reference cannot be built (batch-norm statistics that are not constants, a shape
that still differs), the metrics are None and ``note`` says why: a user never sees an SQNR
computed against the wrong tensor.

Limitation: a weight that reaches a control-flow body (``cond`` branch, ``scan`` body) as an
operand is a placeholder of that body, not a constant of it, so those layers are not listed;
binding body placeholders to the caller's operands needs each higher-order op's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.export import ExportedProgram
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant.debug.comparison import (
    compute_cosine_similarity,
    compute_normalized_l2,
    compute_sqnr,
    module_path,
    op_name,
)
from pt2e_quant.graph.aten_args import argument, attribute
from pt2e_quant.graph.conv_batch_norm import (
    BATCH_NORMS,
    batch_norm_constants,
    folded_weight_and_bias,
    is_foldable_layer,
)
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops.qdq_ops import DEQUANTIZE_PER_CHANNEL, is_dequantize, is_quant_workflow_node

__all__ = ["WeightComparison", "extract_weights", "constant_value", "constant_nodes"]


@dataclass(frozen=True)
class _Scope:
    """A graph module (get_attr targets resolve against it) and its constant nodes."""

    gm: GraphModule
    constants: set[Node]

    def value(self, node: object) -> object:
        return constant_value(self.gm, node, self.constants)


#: a node and the scope it lives in
_Located = tuple[_Scope, Node]


@dataclass(frozen=True)
class WeightComparison:
    """One quantized layer's weight against its float original.

    ``sqnr`` / ``l2`` / ``cosine`` cover the whole tensor; ``channel_sqnr`` has one entry per
    output channel (along ``axis``) for per-channel weights, None for per-tensor ones. All
    metrics are None when ``note`` explains why the two weights are not comparable.
    """

    handle: int | None
    node_name: str
    op: str
    module_path: str
    fqn: str | None
    dtype: torch.dtype | None
    qscheme: torch.qscheme
    axis: int | None
    sqnr: float | None
    l2: float | None
    cosine: float | None
    channel_sqnr: list[float] | None
    bn_folded: bool = False
    note: str | None = None

    @property
    def min_sqnr(self) -> float | None:
        """The worst channel's SQNR for per-channel weights, else the tensor's SQNR."""
        if self.channel_sqnr:
            return min(self.channel_sqnr)
        return self.sqnr


def constant_nodes(graph: Graph) -> set[Node]:
    """The nodes computed from module constants only (``get_attr`` and calls on them), in one
    pass: deciding it per node by walking up would revisit the whole graph for every op."""
    found: set[Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr" or (
            node.op == "call_function" and all(i in found for i in node.all_input_nodes)
        ):
            found.add(node)
    return found


def constant_value(
    gm: GraphModule,
    node: object,
    constants: set[Node],
    known: dict[Node, object] | None = None,
) -> object:
    """Evaluate ``node`` when it is in ``constants`` (see :func:`constant_nodes`), else None.

    Covers ``get_attr`` and chains of calls on them (a dequantize of a frozen int8 weight, a
    dequantize of a quantize of a float weight). ``known`` supplies values for further nodes,
    which must then be in ``constants`` too; the report uses it to replay the q / dq of an
    input on a recorded value.
    """
    if not isinstance(node, Node):
        return node
    if known is not None and node in known:
        return known[node]
    if node not in constants:
        return None
    if node.op == "get_attr":
        return attribute(gm, str(node.target))
    args, kwargs = map_arg(
        (node.args, node.kwargs), lambda n: constant_value(gm, n, constants, known)
    )
    with torch.no_grad():
        return node.target(*args, **kwargs)  # type: ignore[operator]


def _schema_name(node: Node, index: int) -> str | None:
    schema = getattr(node.target, "_schema", None)
    if schema is None or index >= len(schema.arguments):
        return None
    return schema.arguments[index].name


def _quantized_weight(scope: _Scope, op: Node) -> tuple[int, Node, torch.Tensor] | None:
    """(argument index, dequantize node, dequantized value) of the op's constant weight.

    A weight has at least two dimensions (out x in for linear / embedding, out x in x k...
    for convs). That leaves out the other dequantized constants a graph can hold: an int32
    bias, and scalars a quantizer turned into quantized tensors (``mul(x, 0.35)``).
    """
    for index, arg in enumerate(op.args):
        if not is_dequantize(arg) or _schema_name(op, index) == "bias":
            continue
        value = scope.value(arg)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return index, arg, value
    return None


def _qscheme(scope: _Scope, dq: Node) -> tuple[torch.qscheme, int | None]:
    """Per-channel or per-tensor, symmetric when every zero point sits mid-range."""
    zero_point = scope.value(argument(dq, "zero_point", argument(dq, "zero_points")))
    qmin, qmax = argument(dq, "quant_min"), argument(dq, "quant_max")
    middle = (int(qmin) + int(qmax) + 1) // 2
    symmetric = bool(torch.all(torch.as_tensor(zero_point) == middle))
    if dq.target is DEQUANTIZE_PER_CHANNEL:
        axis = int(argument(dq, "axis"))
        scheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
        return scheme, axis
    return (torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine), None


def _float_nodes(float_gm: GraphModule) -> tuple[dict[int, _Located], dict[str, _Located]]:
    by_handle: dict[int, _Located] = {}
    by_name: dict[str, _Located] = {}
    for gm in iter_graph_modules(float_gm):
        scope = _Scope(gm, constant_nodes(gm.graph))
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            handle = get_debug_handle(node)
            if handle is not None:
                by_handle.setdefault(handle, (scope, node))
            by_name.setdefault(node.name, (scope, node))
    return by_handle, by_name


def _float_counterpart(
    op: Node, by_handle: dict[int, _Located], by_name: dict[str, _Located]
) -> _Located | None:
    """The float op with the same handle; by name (and operator) only if the float model has
    no handles at all, since a name can be reused for a different op."""
    handle = get_debug_handle(op)
    if handle is not None and by_handle:
        located = by_handle.get(handle)
        if located is not None and located[1].target in BATCH_NORMS:
            # Folding hands the batch norm's handle to its layer: the weight is the layer's.
            scope, batch_norm = located
            layer = argument(batch_norm, "input")
            located = (scope, layer) if is_foldable_layer(layer) else None
        return located
    located = by_name.get(op.name)
    if located is not None and op_name(located[1]) == op_name(op):
        return located
    return None


def _folded_away_batch_norm(float_op: Node, quantized_op: Node) -> Node | None:
    """The float op's batch norm when the quantized graph folded it (the op's only reader)."""
    if not is_foldable_layer(float_op) or len(float_op.users) != 1:
        return None
    (reader,) = float_op.users
    if reader.target not in BATCH_NORMS:
        return None
    if any(user.target in BATCH_NORMS for user in quantized_op.users):
        return None  # both graphs still run the batch norm: weights match as they are
    return reader


def _float_weight(
    located: _Located, index: int, quantized_op: Node
) -> tuple[torch.Tensor | None, str | None, bool, str | None]:
    """(reference weight, parameter name, batch norm folded, why not comparable)."""
    scope, float_op = located
    name = _schema_name(float_op, index)
    arg = argument(float_op, name) if name else None
    if arg is None and index < len(float_op.args):
        arg = float_op.args[index]
    weight = scope.value(arg)
    fqn = str(arg.target) if isinstance(arg, Node) and arg.op == "get_attr" else None
    if not isinstance(weight, torch.Tensor):
        return None, fqn, False, f"the float weight of '{float_op.name}' is not a constant"
    batch_norm = _folded_away_batch_norm(float_op, quantized_op)
    if batch_norm is None:
        return weight, fqn, False, None
    constants = batch_norm_constants(scope.gm, batch_norm)
    if constants is None:
        return (
            None,
            fqn,
            False,
            (
                f"the quantized model folded batch norm '{batch_norm.name}' into this layer, but "
                "its statistics are not constants of the float model, so no folded float weight "
                "can be built to compare against"
            ),
        )
    bias = scope.value(argument(float_op, "bias"))
    bias = bias if isinstance(bias, torch.Tensor) else None
    folded, _ = folded_weight_and_bias(weight, bias, constants, float_op)
    return folded, fqn, True, None


def _channel_sqnr(ref: torch.Tensor, actual: torch.Tensor, axis: int) -> list[float]:
    rows_ref = ref.movedim(axis, 0).reshape(ref.shape[axis], -1)
    rows_actual = actual.movedim(axis, 0).reshape(actual.shape[axis], -1)
    return [float(compute_sqnr(r, a)) for r, a in zip(rows_ref, rows_actual, strict=True)]


def _compare(
    scope: _Scope, op: Node, located: _Located | None, index: int, dq: Node, actual: torch.Tensor
) -> WeightComparison:
    qscheme, axis = _qscheme(scope, dq)
    ref, fqn, bn_folded, note = (None, None, False, "no float op with this handle or name")
    if located is not None:
        ref, fqn, bn_folded, note = _float_weight(located, index, op)
    if ref is not None and ref.shape != actual.shape:
        note = (
            f"float weight shape {tuple(ref.shape)} differs from the quantized weight shape "
            f"{tuple(actual.shape)}"
        )
        ref = None
    metrics: dict[str, object] = dict(sqnr=None, l2=None, cosine=None, channel_sqnr=None)
    if ref is not None:
        ref, actual = ref.detach().float(), actual.detach().float()
        metrics = dict(
            sqnr=float(compute_sqnr(ref, actual)),
            l2=float(compute_normalized_l2(ref, actual)),
            cosine=float(compute_cosine_similarity(ref, actual)),
            channel_sqnr=_channel_sqnr(ref, actual, axis) if axis is not None else None,
        )
    return WeightComparison(
        handle=get_debug_handle(op),
        node_name=op.name,
        op=op_name(op),
        module_path=module_path(op.meta.get("nn_module_stack")),
        fqn=fqn,
        dtype=argument(dq, "dtype"),
        qscheme=qscheme,
        axis=axis,
        bn_folded=bn_folded,
        note=note,
        **metrics,  # type: ignore[arg-type]
    )


def extract_weights(
    float_model: ExportedProgram | GraphModule, quantized_gm: GraphModule
) -> dict[int | str, WeightComparison]:
    """Compare every dequantized constant weight of ``quantized_gm`` with its float original.

    ``float_model`` is the exported program (or its ``.module()``) the quantized model was
    prepared from. Keys are debug handles, or the quantized node's name for ops without one;
    entries are in graph order (top graph, then control-flow bodies).
    """
    float_gm = float_model.module() if isinstance(float_model, ExportedProgram) else float_model
    by_handle, by_name = _float_nodes(float_gm)
    found: dict[int | str, WeightComparison] = {}
    for gm in iter_graph_modules(quantized_gm):
        scope = _Scope(gm, constant_nodes(gm.graph))
        for op in gm.graph.nodes:
            if op.op != "call_function" or is_quant_workflow_node(op):
                continue
            weight = _quantized_weight(scope, op)
            if weight is None:
                continue
            handle = get_debug_handle(op)
            located = _float_counterpart(op, by_handle, by_name)
            result = _compare(scope, op, located, *weight)
            found[handle if handle is not None else op.name] = result
    return found
