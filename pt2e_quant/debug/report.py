"""One table that says where a quantized model loses accuracy: the numeric report.

``numeric_report(float_model, quantized_gm, example_inputs)`` runs both models once through
output loggers, compares them handle by handle (:func:`~pt2e_quant.debug.comparison.compare_results`)
and joins the weight comparison (:func:`~pt2e_quant.debug.weights.extract_weights`). One row per
quantized op, in graph order::

    #  op      module        handle  act SQNR  input SQNR  drop   weight SQNR
    0  conv2d  stem.0        1       38.1      41.9        3.8    45.2
    1  relu    stem.2        3       38.1      38.1        0.0
    2  conv2d  layers.0.c1   4       12.4      38.1        25.7   9.8     <- first jump

Definitions (what each column means, and the edge cases):

* **quantized op**: a node with a debug handle whose output is quantized (a dequantize in the
  graph carries its handle) or that reads a dequantized constant weight. The second half keeps
  a conv whose output stays float because a relu fused after it carries the quantization: its
  weight SQNR is the number a user needs. One row per handle, at the handle's first node.
* **activation SQNR**: the handle's comparison result, i.e. the value the next op reads (the
  dequantized output when there is one). Several recorded calls or a multi-output op (``split``
  returns a list): the minimum over all calls and elements, the worst case being what matters.
* **input SQNR**: the SQNR of the op's first data input (constants such as weights are skipped;
  q / dq nodes are looked through) as the op reads it: the producer op's activation SQNR, or for
  a graph input, the SQNR of its quantize -> dequantize, replayed on the example input. A graph
  input that reaches the op unquantized is exact: +inf.
* **drop** = input SQNR - activation SQNR: the dB lost at this op (positive = worse). It is None
  when the input is exact (+inf) or unknown (a control-flow body's input): all error is then
  created at this op and there is no finite input to compare with; :meth:`NumericReport.worst`
  still ranks such rows by their activation SQNR.
* **inputs SQNR** (``ReportRow.inputs_sqnr``, not a column): the input SQNR of every data input,
  in argument order (an add or cat reads several); the first is the input SQNR column.
* **weight SQNR**: see :mod:`.weights`; for per-channel weights the worst channel, with all
  channels kept in ``weight_channel_sqnr``. None for ops without a weight, or when the float and
  quantized weights are not comparable (``weight.note`` says why).

:meth:`NumericReport.first_jump` finds one op that loses a lot; :meth:`NumericReport.accumulation`
says where a gradual decay, many ops each losing a little, comes from (see
:mod:`.accumulation`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node

from pt2e_quant.debug import report_render
from pt2e_quant.debug.accumulation import Accumulation, accumulate
from pt2e_quant.debug.comparison import (
    NodeAccuracySummary,
    compare_results,
    compute_sqnr,
    module_path,
    op_name,
)
from pt2e_quant.debug.handles import (
    ADD_HANDLES_HINT,
    MissingDebugHandlesError,
    generate_numeric_debug_handle,
    has_debug_handles,
)
from pt2e_quant.debug.loggers import (
    LoggerResults,
    deep_copy,
    extract_results_from_loggers,
    prepare_for_propagation_comparison,
    shared_handle_piece,
)
from pt2e_quant.debug.weights import (
    WeightComparison,
    constant_nodes,
    constant_value,
    extract_weights,
)
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops.qdq_ops import (
    is_dequantize,
    is_qparam_getitem,
    is_quant_workflow_node,
    is_quantize,
)

__all__ = ["MissingDebugHandlesError", "ReportRow", "NumericReport", "numeric_report"]


@dataclass(frozen=True)
class ReportRow:
    """One quantized op; SQNRs in dB, None where not measured (see the module docstring)."""

    index: int
    op: str
    module_path: str
    handle: int
    node_name: str
    activation_sqnr: float | None
    input_sqnr: float | None
    drop: float | None
    weight: WeightComparison | None = None
    inputs_sqnr: tuple[float | None, ...] = ()

    @property
    def weight_sqnr(self) -> float | None:
        return self.weight.min_sqnr if self.weight is not None else None

    @property
    def weight_channel_sqnr(self) -> list[float] | None:
        return self.weight.channel_sqnr if self.weight is not None else None

    @property
    def label(self) -> str:
        """How the row is named to users: ``module.path (node_name)``."""
        return f"{self.module_path} ({self.node_name})" if self.module_path else self.node_name


@dataclass(frozen=True)
class NumericReport:
    """The per-op table; ``summaries`` / ``weights`` keep the raw comparisons it was built from."""

    rows: tuple[ReportRow, ...]
    summaries: dict[int, NodeAccuracySummary] = field(default_factory=dict, repr=False)
    weights: dict[int | str, WeightComparison] = field(default_factory=dict, repr=False)

    def worst(self, n: int = 1) -> list[ReportRow]:
        """The ``n`` rows with the lowest activation SQNR, worst first (unmeasured rows last out)."""
        measured = [row for row in self.rows if row.activation_sqnr is not None]
        return sorted(measured, key=lambda row: row.activation_sqnr)[:n]  # type: ignore[arg-type, return-value]

    def first_jump(self, threshold_db: float = 10.0) -> ReportRow | None:
        """The first row in graph order that loses more than ``threshold_db`` dB (its drop)."""
        for row in self.rows:
            if row.drop is not None and row.drop > threshold_db:
                return row
        return None

    def accumulation(self, top: int = 5) -> Accumulation:
        """Where the SQNR is lost, op by op, when no single op loses much: the ``top`` ops
        with the largest loss and their share of the total (definitions in
        :mod:`pt2e_quant.debug.accumulation`). Complements :meth:`first_jump`, which is None
        for a model whose SQNR decays over many small drops."""
        return accumulate(self.rows, top)

    def to_text(self) -> str:
        return report_render.render_text(self.rows, self._worst_or_none(), self.accumulation())

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text; also written to ``path`` when given."""
        return _written(report_render.render_csv(self.rows), path)

    def to_html(self, path: str | Path | None = None) -> str:
        """A self-contained HTML page (table + SQNR plot); also written to ``path`` when given."""
        page = report_render.render_html(self.rows, self._worst_or_none(), self.accumulation())
        return _written(page, path)

    def __str__(self) -> str:
        return self.to_text()

    def _worst_or_none(self) -> ReportRow | None:
        worst = self.worst(1)
        return worst[0] if worst else None


def _written(text: str, path: str | Path | None) -> str:
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _float_module(float_model: object, example_inputs: tuple) -> GraphModule:
    """The float side as a handled GraphModule, exporting / adding handles when needed."""
    if isinstance(float_model, GraphModule):
        if has_debug_handles(float_model):
            return float_model
        raise MissingDebugHandlesError(
            "the float GraphModule has no numeric debug handles; pass the ExportedProgram "
            "instead (numeric_report adds handles to a copy of it), or call "
            "generate_numeric_debug_handle(ep) before ep.module()"
        )
    if isinstance(float_model, ExportedProgram):
        program = float_model
        if not has_debug_handles(program.graph_module):
            program = deep_copy(program)  # the caller's program stays as it was
            generate_numeric_debug_handle(program)
        return program.module()
    if isinstance(float_model, torch.nn.Module):
        program = torch.export.export(float_model, tuple(example_inputs))
        generate_numeric_debug_handle(program)
        return program.module()
    raise TypeError(
        "numeric_report expects the float model as an nn.Module, a torch.export.ExportedProgram "
        f"or its .module(), got {type(float_model).__name__}"
    )


def _check_quantized(quantized_gm: GraphModule) -> None:
    if not isinstance(quantized_gm, GraphModule):
        raise TypeError(
            f"numeric_report expects the converted GraphModule, got {type(quantized_gm).__name__}"
        )
    if not has_debug_handles(quantized_gm):
        raise MissingDebugHandlesError(
            "the quantized model carries no numeric debug handles, so its ops cannot be matched "
            f"to the float model's. {ADD_HANDLES_HINT}, then calibrate and convert again"
        )


def _logged(model: GraphModule, example_inputs: tuple) -> LoggerResults:
    logged = prepare_for_propagation_comparison(model)
    with torch.no_grad():
        logged(*example_inputs)
    return extract_results_from_loggers(logged)


def _leaves(value: object) -> Iterator[object]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif value is not None:
        yield value


def _min_sqnr(summary: NodeAccuracySummary | None) -> float | None:
    """The worst SQNR over every recorded call and every element of a multi-output value."""
    if summary is None:
        return None
    values = [float(leaf) for result in summary.results for leaf in _leaves(result.sqnr)]
    return min(values) if values else None


def _sqnr_of(ref: torch.Tensor, actual: object) -> float | None:
    if not isinstance(actual, torch.Tensor) or actual.shape != ref.shape:
        return None
    return float(compute_sqnr(ref, actual))


class _InputSqnr:
    """The SQNR of the value an op reads as its first data input (see the module docstring).

    A read carrying a handle (the producer itself, or the dequantize standing for its output)
    was logged: its SQNR is the comparison's. A read through q / dq nodes without a handle (an
    input quantized for this op only, a graph input) was not; its chain is replayed on the
    producer's logged float and quantized-model values.
    """

    def __init__(
        self,
        top: GraphModule,
        example_inputs: tuple,
        sqnr: dict[int, float | None],
        logged: tuple[LoggerResults, LoggerResults],
    ) -> None:
        self.top, self.sqnr, (self.ref, self.actual) = top, sqnr, logged
        placeholders = [n for n in top.graph.nodes if n.op == "placeholder"]
        self.graph_inputs: dict[Node, object] = {}
        if len(placeholders) == len(example_inputs):
            self.graph_inputs = dict(zip(placeholders, example_inputs, strict=True))
        self.dequantized = {
            h for g in iter_graph_modules(top) for h in _dequantized_handles(g.graph.nodes)
        }

    def __call__(self, gm: GraphModule, constants: set[Node], op: Node) -> tuple[float | None, ...]:
        """The SQNR of each data input of ``op``, in argument order."""
        return tuple(self._of(gm, constants, read) for read in _data_inputs(op, constants))

    def _of(self, gm: GraphModule, constants: set[Node], read: Node) -> float | None:
        handle = get_debug_handle(read)
        if handle is not None:
            return self.sqnr.get(handle)
        source, chain = read, {read}
        while is_dequantize(source) or is_quantize(source):
            if is_quantize(source):  # run-time qparams (choose_qparams -> getitem) replay too
                chain.update(
                    a for q in source.args[1:] if is_qparam_getitem(q) for a in (q, q.args[0])
                )
            source = source.args[0]  # type: ignore[union-attr,assignment]
            chain.add(source)
        pairs = self._values(gm, source)
        if not pairs:
            return None
        replayable = constants | chain
        values = [
            _sqnr_of(ref, constant_value(gm, read, replayable, {source: actual}))
            for ref, actual in pairs
        ]
        return None if None in values else min(values)  # type: ignore[type-var]

    def _values(self, gm: GraphModule, source: Node) -> list[tuple[object, object]] | None:
        """(float value, quantized-model value) of ``source`` for every recorded call."""
        if source.op == "placeholder":
            if gm is not self.top or source not in self.graph_inputs:
                return None  # a control-flow body's input: not recorded
            value = self.graph_inputs[source]
            return [(value, value)]
        handle = get_debug_handle(source)
        if handle is None or handle in self.dequantized:
            return None  # no log, or the log holds the dequantized value, not the raw output
        if handle not in self.ref or handle not in self.actual:
            return None
        pairs = list(zip(self.ref[handle][2], self.actual[handle][2], strict=False))
        piece = shared_handle_piece(source)
        if piece is not None:  # the log holds the multi-output op's whole value
            pairs = [(ref[piece], actual[piece]) for ref, actual in pairs]
        return pairs


def _data_inputs(op: Node, constants: set[Node]) -> list[Node]:
    """The arguments that are data, not constants (a weight and its q / dq), in order."""
    reads: list[Node] = []
    for arg in _leaves((op.args, tuple(op.kwargs.values()))):
        if isinstance(arg, Node) and arg not in constants and arg not in reads:
            reads.append(arg)
    return reads


def _dequantized_handles(nodes: Iterable[Node]) -> set[int]:
    """Handles whose op has a quantized output: a dequantize carries the handle."""
    return {h for n in nodes if is_dequantize(n) and (h := get_debug_handle(n)) is not None}


def _rows(
    quantized_gm: GraphModule,
    sqnr: dict[int, float | None],
    input_sqnr: _InputSqnr,
    weights: dict[int | str, WeightComparison],
) -> tuple[ReportRow, ...]:
    rows: list[ReportRow] = []
    seen: set[int] = set()
    for gm in iter_graph_modules(quantized_gm):
        quantized = _dequantized_handles(gm.graph.nodes)
        constants = constant_nodes(gm.graph)
        for op in gm.graph.nodes:
            handle = get_debug_handle(op)
            if op.op != "call_function" or is_quant_workflow_node(op) or handle in seen:
                continue
            if handle is None or (handle not in quantized and handle not in weights):
                continue
            seen.add(handle)
            inputs = input_sqnr(gm, constants, op)
            activation, before = sqnr.get(handle), inputs[0] if inputs else None
            drop = None
            if activation is not None and before is not None and math.isfinite(before):
                drop = before - activation
            rows.append(
                ReportRow(
                    index=len(rows),
                    op=op_name(op),
                    module_path=module_path(op.meta.get("nn_module_stack")),
                    handle=handle,
                    node_name=op.name,
                    activation_sqnr=activation,
                    input_sqnr=before,
                    drop=drop,
                    weight=weights.get(handle),
                    inputs_sqnr=inputs,
                )
            )
    return tuple(rows)


def numeric_report(
    float_model: torch.nn.Module | ExportedProgram | GraphModule,
    quantized_gm: GraphModule,
    example_inputs: Sequence[object],
) -> NumericReport:
    """Compare ``quantized_gm`` with its float original op by op on ``example_inputs``.

    ``float_model`` is the exported program the quantized model was prepared from (handles
    are added to a copy when it has none), its ``.module()``, or the eager model, which is then
    exported (non-strict) and given handles: that matches the quantized model as long as the
    same export produced it. ``quantized_gm`` must carry handles (generate them on the program
    before ``ep.module()`` / ``prepare_pt2e``); without any, :class:`MissingDebugHandlesError`.
    """
    example_inputs = tuple(example_inputs)
    _check_quantized(quantized_gm)
    float_gm = _float_module(float_model, example_inputs)
    logged = (_logged(float_gm, example_inputs), _logged(quantized_gm, example_inputs))
    summaries = compare_results(*logged)
    weights = extract_weights(float_gm, quantized_gm)
    sqnr = {handle: _min_sqnr(summary) for handle, summary in summaries.items()}
    input_sqnr = _InputSqnr(quantized_gm, example_inputs, sqnr, logged)
    rows = _rows(quantized_gm, sqnr, input_sqnr, weights)
    return NumericReport(rows=rows, summaries=summaries, weights=weights)
