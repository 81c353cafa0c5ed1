"""Per-layer sensitivity: quantize one layer at a time and rank layers by the damage they do.

A numeric report compares every op of one fully quantized model, so an early bad layer colours
every later row. Sensitivity asks a different question, one a fallback policy can act on: *if
only this layer were quantized, how far would the model's output move?* For each unit the
quantizer would annotate, the float model is prepared with just that unit's annotations,
calibrated, converted and run; the output is scored against the float output::

    ranking = sensitivity(ep, XNNPACKQuantizer().set_global(config), calibration_batches)
    print(ranking.to_text(top=3))
    worst = ranking[0]          # LayerSensitivity: module_path, node_names, handle, value, ...

A *unit* is what the quantizer annotated as one pattern: a weighted op together with the nodes
fused into it (``conv -> relu`` where the conv's output is left float and the relu carries the
output spec; ``conv -> add -> relu`` for backends fusing residual adds), or a standalone
annotated op (add, cat, pooling, a view sharing its producer's qparams). Formally: annotated
nodes joined by every edge whose producer has no output spec and whose consumer does not
quantize that edge, i.e. a tensor that is claimed but never observed.

Keeping one unit cuts the references its specs make to the rest of the graph:

* a :class:`SharedQuantizationSpec` pointing at an edge or output outside the unit (a max-pool
  sharing its producer conv's output) is replaced, for the first unit member that refers to
  it, by the concrete spec the reference resolves to; later references to the same target
  share with that member. Sharing inside the unit is unchanged (a cat stays one group), so
  the unit is quantized exactly as in the full model except that its qparams are observed at
  its own edges;
* a :class:`DerivedQuantizationSpec` whose sources lie outside the unit (and were not taken
  over as above) is dropped, leaving that edge float; the result's ``notes`` say so.

Post-training only: the quantizer's config must build observers (``prepare_pt2e``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node
from tqdm.auto import tqdm

from pt2e_quant.contract.annotation import clear_annotations, get_annotation
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.restrict import restrict_annotations
from pt2e_quant.debug.comparison import compute_mse, compute_sqnr, module_path
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.pipeline.calibration import outputs_of, read_batches
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_pt2e

__all__ = [
    "LayerSensitivity",
    "SensitivityRanking",
    "output_sqnr",
    "sensitivity",
    "single_layer_quantizer",
]

#: ``metric(ref_output, quantized_output) -> float``, larger meaning more damage
MetricFn = Callable[[Any, Any], float]


@dataclass(frozen=True)
class LayerSensitivity:
    """The damage one unit does when it alone is quantized.

    ``value`` is the metric as a user reads it (SQNR in dB: higher is better; MSE or a custom
    metric: higher is worse); ``damage`` orders the ranking, larger meaning worse (``-SQNR``
    for "sqnr"). Both are None and ``error`` holds the message when quantizing the unit
    failed. ``graph`` names the control-flow body holding the unit ("" for the top graph);
    ``handle`` is the numeric-debug handle of the unit's output node, when the model has them.
    """

    module_path: str
    node_names: tuple[str, ...]
    handle: int | None
    metric: str
    value: float | None
    damage: float | None
    graph: str = ""
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def describe_value(self) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        if self.metric == "sqnr":
            return f"SQNR {self.value:.1f} dB"
        return f"{self.metric.upper() if self.metric == 'mse' else self.metric} {self.value:.4g}"


class SensitivityRanking(list):
    """:class:`LayerSensitivity` rows, most damaging first; units that failed come last."""

    @property
    def failed(self) -> list[LayerSensitivity]:
        return [row for row in self if row.failed]

    def to_text(self, top: int | None = None) -> str:
        """One line per unit: rank, metric, module path, nodes and handle."""
        rows = self if top is None else self[:top]
        lines = [f"{'rank':>4}  {'metric':<18} {'module':<24} {'handle':>6}  nodes"]
        for rank, row in enumerate(rows, start=1):
            handle = "-" if row.handle is None else str(row.handle)
            where = row.module_path or "<top>"
            if row.graph:
                where = f"{row.graph}:{where}"
            value = row.describe_value() if not row.failed else "failed"
            lines.append(
                f"{rank:>4}  {value:<18} {where:<24} {handle:>6}  {', '.join(row.node_names)}"
            )
            notes = (row.error.splitlines()[0],) if row.failed else row.notes
            lines.extend(f"      {note}" for note in notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------- units


@dataclass(frozen=True)
class _Unit:
    graph: str
    nodes: tuple[str, ...]  # graph order; the last is the one whose output is compared
    module_path: str  # of the first node
    handle: int | None  # of the last node


def _find_units(gm: GraphModule, graph: str) -> list[_Unit]:
    """Annotated nodes grouped into units (see the module docstring), in graph order."""
    annotated = [n for n in gm.graph.nodes if get_annotation(n) is not None]
    parent = {n: n for n in annotated}

    def root(node: Node) -> Node:
        while parent[node] is not node:
            node = parent[node]
        return node

    for node in annotated:
        if get_annotation(node).output_qspec is not None:
            continue
        for user in node.users:
            annotation = get_annotation(user)
            if annotation is not None and annotation.input_qspec_map.get(node) is None:
                parent[root(user)] = root(node)
    groups: dict[Node, list[Node]] = {}
    for node in annotated:
        groups.setdefault(root(node), []).append(node)
    return [
        _Unit(
            graph,
            tuple(n.name for n in group),
            module_path(group[0].meta.get("nn_module_stack")),
            get_debug_handle(group[-1]),
        )
        for group in groups.values()
        if _quantizes(group)
    ]


def _quantizes(nodes: list[Node]) -> bool:
    for node in nodes:
        annotation = get_annotation(node)
        specs = [annotation.output_qspec, *annotation.input_qspec_map.values()]
        if any(spec is not None for spec in specs):
            return True
    return False


class _UnitQuantizer(Quantizer):
    """Runs the real quantizer, then keeps one unit's annotations (``unit=None``: records the
    units of every graph in ``found`` and keeps nothing, so prepare inserts no observer)."""

    def __init__(self, quantizer: Quantizer, unit: _Unit | None) -> None:
        self.quantizer = quantizer
        self.unit = unit
        self.found: dict[str, list[_Unit]] = {}
        self.notes: list[str] = []
        self._graph_names: dict[int, str] = {}

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        model = self.quantizer.transform_for_annotation(model)
        # prepare hands annotate the top graph, then each body: name them from the top.
        self._graph_names = {
            id(m): name for name, m in model.named_modules() if isinstance(m, GraphModule)
        }
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        model = self.quantizer.annotate(model)
        for gm in iter_graph_modules(model):
            name = self._graph_names.get(id(gm))  # None: unknown graph, keep nothing
            if self.unit is None:
                self.found[name] = _find_units(gm, name)
            if self.unit is not None and name == self.unit.graph:
                names = set(self.unit.nodes)
                keep = [n for n in gm.graph.nodes if n.name in names]
                self.notes.extend(restrict_annotations(gm, keep))
            else:
                clear_annotations(gm.graph.nodes)
        return model

    def validate(self, model: GraphModule) -> None:
        self.quantizer.validate(model)

    def prepare_obs_or_fq_callback(self, model: GraphModule, edge_or_node_to_obs_or_fq) -> None:
        self.quantizer.prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)


def single_layer_quantizer(quantizer: Quantizer, layer: LayerSensitivity) -> Quantizer:
    """A quantizer that quantizes only ``layer``'s unit, as :func:`sensitivity` measured it.

    ``prepare_pt2e(model, single_layer_quantizer(quantizer, ranking[0]))`` rebuilds the model
    behind a ranking row, e.g. to inspect it with the numeric debugger.
    """
    unit = _Unit(layer.graph, layer.node_names, layer.module_path, layer.handle)
    return _UnitQuantizer(quantizer, unit)


# ------------------------------------------------------------------------- scoring


def _float_tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value.detach().reshape(-1).float()] if value.is_floating_point() else []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _float_tensors(item)]
    return []


def _flat(outputs: list[Any]) -> torch.Tensor:
    tensors = _float_tensors(outputs)
    if not tensors:
        raise ValueError(
            "sensitivity: the model's output holds no floating-point tensor, so 'sqnr' and "
            "'mse' have nothing to compare; pass a callable metric"
        )
    return torch.cat(tensors)


def output_sqnr(reference: list[Any], outputs: list[Any]) -> float:
    """SQNR in dB of every float tensor of ``outputs`` (one model output per batch) against
    ``reference``, all batches concatenated: the score sensitivity ranks by."""
    return float(compute_sqnr(_flat(reference), _flat(outputs)))


#: built-in metrics: (function, sign turning the value into damage)
_BUILTIN_METRICS = {"sqnr": (compute_sqnr, -1.0), "mse": (compute_mse, 1.0)}


def _scorer(metric: str | MetricFn) -> tuple[str, Callable[[list, list], tuple[float, float]]]:
    """(metric name, score(ref_outputs, outputs) -> (value, damage))."""
    if isinstance(metric, str) and metric in _BUILTIN_METRICS:
        fn, sign = _BUILTIN_METRICS[metric]

        def builtin(ref: list, out: list) -> tuple[float, float]:
            value = float(fn(_flat(ref), _flat(out)))
            return value, sign * value

        return metric, builtin
    if callable(metric):

        def custom(ref: list, out: list) -> tuple[float, float]:
            value = sum(float(metric(r, o)) for r, o in zip(ref, out, strict=True)) / len(ref)
            return value, value

        return getattr(metric, "__name__", "custom"), custom
    raise ValueError(
        "sensitivity: metric must be 'sqnr', 'mse' or a callable (ref, quantized) -> float "
        f"where larger means more damage, got {metric!r}"
    )


# -------------------------------------------------------------------------- driver


def sensitivity(
    model_ep: ExportedProgram | GraphModule,
    quantizer: Quantizer,
    calibration_data: Iterable[Any],
    metric: str | MetricFn = "sqnr",
    *,
    eval_data: Iterable[Any] | None = None,
    progress: bool = True,
) -> SensitivityRanking:
    """Rank the quantizer's units by the damage each does when quantized alone.

    ``calibration_data`` (and ``eval_data``, which defaults to it) are iterables of tuples of
    positional model inputs; they are read once. ``metric`` is "sqnr" (default; the SQNR of
    the model's output against the float output, lower is worse), "mse" (higher is worse) or
    a callable ``metric(ref_output, quantized_output) -> float`` called per evaluation batch
    and averaged, where **larger means more damage**. A unit whose quantization raises is
    kept in the ranking, after the measured ones, with the message in ``error``.
    """
    name, score = _scorer(metric)
    gm = model_ep.module() if isinstance(model_ep, ExportedProgram) else model_ep
    calibration = read_batches(calibration_data, "sensitivity: calibration_data")
    evaluation = (
        calibration if eval_data is None else read_batches(eval_data, "sensitivity: eval_data")
    )
    discovery = _UnitQuantizer(quantizer, None)
    prepare_pt2e(gm, discovery)
    units = [unit for found in discovery.found.values() for unit in found]
    if not units:
        warnings.warn(
            f"sensitivity: {type(quantizer).__name__} annotated nothing in this model, so "
            "there is no layer to rank; check its configuration",
            stacklevel=2,
        )
        return SensitivityRanking()
    reference = outputs_of(gm, evaluation)
    rows = [
        _measure(gm, quantizer, unit, calibration, evaluation, reference, name, score)
        for unit in tqdm(units, desc="sensitivity", unit="layer", disable=not progress)
    ]
    measured = sorted((r for r in rows if not r.failed), key=_order)
    return SensitivityRanking(measured + [r for r in rows if r.failed])


def _order(row: LayerSensitivity) -> float:
    return -math.inf if math.isnan(row.damage) else -row.damage  # NaN: worst


def _measure(
    gm: GraphModule,
    quantizer: Quantizer,
    unit: _Unit,
    calibration: list[tuple[Any, ...]],
    evaluation: list[tuple[Any, ...]],
    reference: list[Any],
    metric: str,
    score: Callable[[list, list], tuple[float, float]],
) -> LayerSensitivity:
    only_unit = _UnitQuantizer(quantizer, unit)
    value = damage = error = None
    # Warnings (an observer the calibration data never reached, say) concern this unit: keep
    # them with its row instead of repeating them once per unit on the console.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            prepared = prepare_pt2e(gm, only_unit)
            outputs_of(prepared, calibration)
            value, damage = score(reference, outputs_of(convert_pt2e(prepared), evaluation))
        except Exception as exc:  # noqa: BLE001 - a failing layer is a result, not a crash
            error = f"{type(exc).__name__}: {exc}"
    notes = [*only_unit.notes, *dict.fromkeys(str(w.message).splitlines()[0] for w in caught)]
    return LayerSensitivity(
        unit.module_path, unit.nodes, unit.handle, metric, value, damage, unit.graph, error,
        tuple(notes),
    )  # fmt: skip
