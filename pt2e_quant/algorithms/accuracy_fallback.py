"""Accuracy-aware fallback: keep the fewest ops float that bring a model to an accuracy target.

Quantizing everything is cheapest to run and sometimes costs too much accuracy; keeping a
layer float buys accuracy back at its price. The question a user asks is "which layers, and
how few?". The answer is searched, and every candidate is verified by quantizing and scoring
the whole model; nothing is predicted from per-layer numbers alone:

1. **rank**: :func:`~pt2e_quant.debug.sensitivity.sensitivity` orders the quantizer's units
   (a weighted op with what it fuses, or a standalone annotated op) by the damage each does
   when it alone is quantized;
2. **merge followers**: an op sharing a unit's output qparams (a view, transpose or dropout
   annotated with a :class:`SharedQuantizationSpec` on it) would quantize that output again
   right after the unit kept float, and most of the step's gain would be lost; each ranked
   unit takes its followers along, and rows they subsume leave the ranking;
3. **bracket**: the full model is scored; if it misses the target, a binary search over the
   ranking finds the shortest prefix (most damaging units first) whose units, kept float,
   meet the target. Damage is close to monotone in the prefix length, so this costs about
   log2(units) candidates where walking the ranking one unit at a time (NNCF's and most
   tools' greedy removal) costs one candidate per unit kept float;
4. **prune**: the units of that prefix are tried quantized again, least damaging first, and
   each one the target still allows is quantized: per-layer sensitivity overstates units
   whose error interacts with others. Where damage is monotone in the prefix, the result
   keeps no more units float than greedy removal over the same ranking; with the followers
   merged, usually fewer (``benchmarks/bench_accuracy.py`` measures both).

``strategy="greedy"`` runs the plain greedy removal over the ranking's own units instead
(no bracketing, merging or pruning), for comparison. Scores: the
default metric is the SQNR (dB) of the quantized model's outputs against the float model's
on the validation batches; a callable ``metric(model) -> float`` scores a candidate model
(higher is better: an accuracy, or a negated loss) and ``target`` is the value to reach.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule
from tqdm.auto import tqdm

from pt2e_quant.algorithms.overrides import KEPT_FOR_TARGET, OverridingQuantizer
from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.contract.specs import SharedQuantizationSpec
from pt2e_quant.debug.sensitivity import (
    LayerSensitivity,
    SensitivityRanking,
    output_sqnr,
    sensitivity,
)
from pt2e_quant.errors import QuantizationError, warn_user
from pt2e_quant.pipeline.calibration import calibrate, outputs_of, read_batches
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_pt2e

__all__ = [
    "FallbackCandidate",
    "FallbackResult",
    "MetricError",
    "TargetNotMetWarning",
    "accuracy_fallback",
]

#: ``build(keep_float) -> converted model``: quantizes one candidate, ``keep_float`` mapping
#: node names to the reason each stays float
BuildFn = Callable[[Mapping[str, str]], GraphModule]
#: ``metric(model) -> float``, higher is better
ModelMetric = Callable[[GraphModule], float]

_STRATEGIES = ("search", "greedy")


class MetricError(QuantizationError, ValueError):
    """The accuracy metric raised, or returned something that is not a finite number."""


class TargetNotMetWarning(UserWarning):
    """No candidate the fallback was allowed to try reached the accuracy target."""


@dataclass(frozen=True)
class FallbackCandidate:
    """One verified candidate: the units kept float (by ranking row) and its score."""

    float_units: tuple[LayerSensitivity, ...]
    score: float
    meets_target: bool

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return tuple(name for unit in self.float_units for name in unit.node_names)


@dataclass
class FallbackResult:
    """The chosen model and how it was found.

    ``module`` is the converted model of ``chosen``; ``met`` tells whether it reaches the
    target (when not, ``chosen`` is the best-scoring candidate tried). ``history`` lists every
    candidate scored, in order; ``ranking`` is the sensitivity ranking searched.
    """

    module: GraphModule
    chosen: FallbackCandidate
    target: float
    metric: str
    met: bool
    ranking: SensitivityRanking
    history: list[FallbackCandidate] = field(default_factory=list)

    @property
    def float_nodes(self) -> tuple[str, ...]:
        return self.chosen.float_nodes

    @property
    def evaluations(self) -> int:
        return len(self.history)

    def summary(self) -> str:
        verdict = "meets" if self.met else "does NOT meet"
        return (
            f"{len(self.chosen.float_units)} of {len(self.ranking)} units kept float "
            f"({', '.join(self.float_nodes) or 'none'}); {self.metric} {self.chosen.score:.4g} "
            f"{verdict} the target {self.target:.4g}; {self.evaluations} candidates verified"
        )


def _check_target(target: Any) -> float:
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, float))
        or not math.isfinite(target)
    ):
        raise ValueError(
            f"accuracy fallback: target must be a finite number (dB of output SQNR by default, "
            f"or the value your metric must reach), got {target!r}"
        )
    return float(target)


def _scorer(
    float_model: GraphModule, metric: str | ModelMetric, validation: list[tuple[Any, ...]]
) -> tuple[str, Callable[[GraphModule, str], float]]:
    """(metric name, score(model, what) -> float); ``what`` names the candidate in errors."""
    if metric == "sqnr":
        reference = outputs_of(float_model, validation)
        return "sqnr", lambda model, what: output_sqnr(reference, outputs_of(model, validation))
    if not callable(metric) or isinstance(metric, str):
        raise ValueError(
            "accuracy fallback: metric must be 'sqnr' or a callable metric(model) -> float "
            f"(higher is better), got {metric!r}"
        )
    name = getattr(metric, "__name__", type(metric).__name__)

    def custom(model: GraphModule, what: str) -> float:
        try:
            value = metric(model)
        except Exception as error:
            raise MetricError(
                f"accuracy fallback: the metric {name!r} raised {type(error).__name__} on "
                f"{what}: {error}; fix the metric (it is called with a converted GraphModule "
                "and must return a float, higher is better)"
            ) from error
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise MetricError(
                f"accuracy fallback: the metric {name!r} returned {value!r} on {what}; it must "
                "return a number (not NaN), higher is better"
            )
        return float(value)

    return name, custom


def default_build(
    float_model: GraphModule, quantizer: Any, calibration: list[tuple[Any, ...]]
) -> BuildFn:
    """prepare (``quantizer`` with the candidate's ops kept float) -> calibrate -> convert."""

    def build(keep_float: Mapping[str, str]) -> GraphModule:
        wrapped = OverridingQuantizer(quantizer, keep_float=keep_float)
        prepared = prepare_pt2e(float_model, wrapped)
        calibrate(prepared, calibration, calibration[0], progress=False)
        return convert_pt2e(prepared)

    return build


def _shared_sources(float_model: GraphModule, quantizer: Any) -> dict[str, set[str]]:
    """Node name -> names of the nodes whose output its specs share (one annotation pass)."""
    sources: dict[str, set[str]] = {}

    def record(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            annotation = get_annotation(node)
            if annotation is None:
                continue
            for spec in (annotation.output_qspec, *annotation.input_qspec_map.values()):
                if isinstance(spec, SharedQuantizationSpec):
                    target = spec.edge_or_node
                    producer = target if isinstance(target, torch.fx.Node) else target[0]
                    if producer is not node:
                        sources.setdefault(node.name, set()).add(producer.name)

    prepare_pt2e(float_model, OverridingQuantizer(quantizer, adjustments=[record]))
    return sources


def _with_followers(
    units: list[LayerSensitivity], sources: dict[str, set[str]]
) -> list[LayerSensitivity]:
    """Each unit with the ops sharing its output qparams, transitively; subsumed rows dropped."""
    merged: list[LayerSensitivity] = []
    taken: set[str] = set()
    for unit in units:
        if set(unit.node_names) <= taken:
            continue
        names = list(unit.node_names)
        grew = True
        while grew:
            followers = [n for n, s in sources.items() if s & set(names) and n not in names]
            names.extend(followers)
            grew = bool(followers)
        taken.update(names)
        merged.append(dataclasses.replace(unit, node_names=tuple(names)))
    return merged


class _Search:
    """Scores candidates (each set of float units at most once) and remembers them all."""

    def __init__(self, build: BuildFn, score: Callable[[GraphModule, str], float], target: float):
        self.build, self.score, self.target = build, score, target
        self.history: list[FallbackCandidate] = []
        self._seen: dict[tuple[int, ...], FallbackCandidate] = {}
        self._last: tuple[FallbackCandidate | None, GraphModule | None] = (None, None)
        self.units: list[LayerSensitivity] = []

    @staticmethod
    def _keep_float(units: Sequence[LayerSensitivity]) -> dict[str, str]:
        return {name: KEPT_FOR_TARGET for unit in units for name in unit.node_names}

    def candidate(self, indices: Iterable[int], progress: tqdm) -> FallbackCandidate:
        key = tuple(sorted(indices))
        if key in self._seen:
            return self._seen[key]
        units = tuple(self.units[i] for i in key)
        module = self.build(self._keep_float(units))
        what = f"the model with {len(units)} unit(s) kept float"
        value = self.score(module, what)
        found = FallbackCandidate(units, value, value >= self.target)
        self._seen[key] = found
        self.history.append(found)
        self._last = (found, module)  # one model held at a time: a large model's are big
        progress.update(1)
        return found

    def module_of(self, candidate: FallbackCandidate) -> GraphModule:
        """The candidate's converted model: the last one built, or built again (the build is
        deterministic: same calibration, same observers)."""
        last, module = self._last
        if last is candidate and module is not None:
            return module
        return self.build(self._keep_float(candidate.float_units))


def _search(search: _Search, limit: int, progress: tqdm) -> FallbackCandidate | None:
    """Bracket the shortest meeting prefix of the ranking, then prune it (module docstring)."""
    if not search.candidate(range(limit), progress).meets_target:
        return None
    low, high = 0, limit  # the prefix of length ``low`` misses the target, ``high`` meets it
    while high - low > 1:
        middle = (low + high) // 2
        if search.candidate(range(middle), progress).meets_target:
            high = middle
        else:
            low = middle
    chosen = list(range(high))
    for index in reversed(range(high)):  # least damaging first
        trial = [i for i in chosen if i != index]
        if search.candidate(trial, progress).meets_target:
            chosen = trial
    return search.candidate(chosen, progress)


def _greedy(search: _Search, limit: int, progress: tqdm) -> FallbackCandidate | None:
    for length in range(1, limit + 1):
        found = search.candidate(range(length), progress)
        if found.meets_target:
            return found
    return None


def accuracy_fallback(
    float_model: GraphModule,
    quantizer: Any,
    calibration: Iterable[Any],
    target: float,
    metric: str | ModelMetric = "sqnr",
    *,
    validation: Iterable[Any] | None = None,
    strategy: str = "search",
    max_float_units: int | None = None,
    ranking: SensitivityRanking | None = None,
    build: BuildFn | None = None,
    progress: bool = True,
) -> FallbackResult:
    """Quantize ``float_model`` with ``quantizer``, keeping float the fewest units that reach
    ``target`` (see the module docstring).

    ``calibration`` / ``validation`` (default: the calibration batches) are iterables of
    input tuples, read once. ``max_float_units`` caps how many units may stay float (None:
    no cap). ``ranking`` reuses a :func:`sensitivity` result computed with the same
    quantizer and data. ``build`` replaces how one candidate is quantized (``quantize()``
    adds its bias correction there); by default prepare -> calibrate -> convert.

    When no allowed candidate reaches the target, a :class:`TargetNotMetWarning` says so and
    the best-scoring candidate tried is returned with ``met=False``.
    """
    target = _check_target(target)
    if strategy not in _STRATEGIES:
        raise ValueError(
            f"accuracy fallback: strategy must be one of {_STRATEGIES}, got {strategy!r}"
        )
    if max_float_units is not None and (
        isinstance(max_float_units, bool)
        or not isinstance(max_float_units, int)
        or max_float_units < 0
    ):
        raise ValueError(
            f"accuracy fallback: max_float_units must be None or an int >= 0, got {max_float_units!r}"
        )
    calibration_batches = read_batches(calibration, "accuracy fallback: calibration")
    validation_batches = (
        calibration_batches
        if validation is None
        else read_batches(validation, "accuracy fallback: validation")
    )
    name, score = _scorer(float_model, metric, validation_batches)
    if build is None:
        build = default_build(float_model, quantizer, calibration_batches)
    search = _Search(build, score, target)
    limit = 0
    with tqdm(desc="accuracy fallback", unit="candidate", disable=not progress) as bar:
        found: FallbackCandidate | None = search.candidate((), bar)  # everything quantized
        if not found.meets_target:
            if ranking is None:
                ranking = sensitivity(
                    float_model, quantizer, calibration_batches, eval_data=validation_batches,
                    progress=progress,
                )  # fmt: skip
            search.units = [row for row in ranking if not row.failed]
            if strategy == "search":
                sources = _shared_sources(float_model, quantizer)
                search.units = _with_followers(search.units, sources)
            limit = len(search.units)
            if max_float_units is not None:
                limit = min(max_float_units, limit)
            found = (
                (_search if strategy == "search" else _greedy)(search, limit, bar)
                if limit
                else None
            )
    ranking = SensitivityRanking() if ranking is None else ranking
    met = found is not None
    if found is None:
        found = max(search.history, key=lambda c: (c.score, -len(c.float_units)))
        warn_user(
            f"accuracy fallback: no candidate reached the target {name} >= {target:.4g} with at "
            f"most {limit} of {len(search.units)} units kept float; returning the best found "
            f"({name} {found.score:.4g}, {len(found.float_units)} units float). Lower the "
            "target, raise max_float_units, or try SmoothQuant / range estimators first",
            TargetNotMetWarning,
        )
    return FallbackResult(
        search.module_of(found), found, target, name, met, ranking, list(search.history)
    )
