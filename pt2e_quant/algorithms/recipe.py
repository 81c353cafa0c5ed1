"""The order the accuracy algorithms run in, for ``quantize()`` and the CLI.

Each algorithm acts at one point of the pipeline, so combining them is a fixed sequence::

    float graph --SmoothQuant--> smoothed float graph            (before annotation)
    quantizer --OverridingQuantizer(range estimators)--> annotations   (after annotation)
    prepare -> calibrate --bias correction--> convert            (on the calibrated model)
    and around all of it, the accuracy-aware fallback, which repeats prepare..convert per
    candidate set of float ops

The knobs are named after the effect a user wants, NNCF's vocabulary where one exists
(``smooth_quant`` alpha, ``bias_correction``, a range estimator per tensor kind, and a
``target`` for the fallback instead of NNCF's ``max_drop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule

from pt2e_quant.algorithms.accuracy_fallback import BuildFn, FallbackResult, accuracy_fallback
from pt2e_quant.algorithms.bias_correction import correct_bias
from pt2e_quant.algorithms.overrides import Adjustment, OverridingQuantizer
from pt2e_quant.algorithms.range_estimation import range_estimator_adjustment
from pt2e_quant.algorithms.smooth_quant import SmoothQuantResult, check_alpha, smooth_quant
from pt2e_quant.distributed.calibration import SyncReport, calibrate_distributed
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_pt2e

__all__ = ["AccuracyOptions", "AccuracyOutcome", "candidate_builder", "run_accuracy_recipe"]


@dataclass(frozen=True)
class AccuracyOptions:
    """What ``quantize()`` does beyond calibrating the quantizer's observers.

    * ``range_estimator`` / ``weight_range_estimator``: how activation / weight ranges are
      measured ("minmax", "percentile", "mse", "kl" (activations only); None keeps the
      quantizer's own observers), swapped into every static spec after annotation
      (:mod:`~pt2e_quant.algorithms.range_estimation`, ``docs/range-estimators.md``).
    * ``smooth_quant``: SmoothQuant's alpha (None: off): linear / matmul inputs have their
      per-channel outliers migrated into the weights before annotation
      (:mod:`~pt2e_quant.algorithms.smooth_quant`).
    * ``bias_correction``: fold each quantized conv / linear's mean output shift, measured on
      the calibration batches, into its bias (:mod:`~pt2e_quant.algorithms.bias_correction`).
    * ``target``: reach this score by keeping the fewest ops float (None: no fallback);
      ``metric`` "sqnr" (output SQNR in dB vs the float model, the default) or a callable
      ``metric(model) -> float``, higher is better; scored on ``validation`` (default: the
      calibration batches); at most ``max_float_units`` units kept float.
    """

    range_estimator: str | None = None
    weight_range_estimator: str | None = None
    smooth_quant: float | None = None
    bias_correction: bool = False
    target: float | None = None
    metric: str | Callable[[GraphModule], float] = "sqnr"
    validation: Iterable[Any] | None = None
    max_float_units: int | None = None

    @property
    def active(self) -> bool:
        return (
            self.range_estimator is not None
            or self.weight_range_estimator is not None
            or self.smooth_quant is not None
            or self.bias_correction
            or self.target is not None
        )

    def check(self) -> None:
        """Argument mistakes, as ValueErrors naming the argument, before any slow work."""
        _adjustments(self)  # unknown estimator names raise here, naming the argument
        if self.smooth_quant is not None:
            check_alpha(self.smooth_quant)
        if not isinstance(self.bias_correction, bool):
            raise ValueError(f"bias_correction must be True or False, got {self.bias_correction!r}")
        if self.target is not None and (
            isinstance(self.target, bool)
            or not isinstance(self.target, (int, float))
            or not math.isfinite(self.target)
        ):
            raise ValueError(
                f"target must be a finite number (dB of output SQNR, or the value metric must "
                f"reach), got {self.target!r}"
            )
        if self.target is None and (self.metric != "sqnr" or self.validation is not None):
            raise ValueError("metric and validation score the fallback: they need target=...")


@dataclass
class AccuracyOutcome:
    """The converted model, what SmoothQuant smoothed and what the fallback found (None
    when not asked for)."""

    module: GraphModule
    fallback: FallbackResult | None
    smoothing: SmoothQuantResult | None = None
    #: the observer merge of the last calibration (under torch.distributed)
    merge: SyncReport | None = None


def _adjustments(options: AccuracyOptions) -> list[Adjustment]:
    if options.range_estimator is None and options.weight_range_estimator is None:
        return []
    return [range_estimator_adjustment(options.range_estimator, options.weight_range_estimator)]


def candidate_builder(
    float_model: GraphModule,
    quantizer: Any,
    batches: list[tuple[Any, ...]],
    options: AccuracyOptions,
    merges: list[SyncReport] | None = None,
) -> tuple[OverridingQuantizer, BuildFn]:
    """The quantizer the fallback ranks with (the range estimators applied) and the build of
    one candidate: annotate (estimators, ops kept float) -> prepare -> calibrate (merged
    across ranks under torch.distributed, each merge's report appended to ``merges``) ->
    bias correction -> convert. SmoothQuant, when asked for, has already rewritten
    ``float_model``."""
    adjustments = _adjustments(options)

    def build(keep_float: Mapping[str, str]) -> GraphModule:
        wrapped = OverridingQuantizer(quantizer, keep_float=keep_float, adjustments=adjustments)
        prepared = prepare_pt2e(float_model, wrapped)
        # an empty shard is reported by the merge, naming the rank
        merge = calibrate_distributed(prepared, batches, batches[0] if batches else None)
        if merges is not None:
            merges.append(merge)
        if options.bias_correction:
            correct_bias(prepared, batches)
        return convert_pt2e(prepared)

    return OverridingQuantizer(quantizer, adjustments=adjustments), build


def run_accuracy_recipe(
    float_model: GraphModule,
    quantizer: Any,
    batches: list[tuple[Any, ...]],
    options: AccuracyOptions,
    *,
    progress: bool = True,
) -> AccuracyOutcome:
    """prepare -> calibrate -> convert of ``float_model`` with every algorithm ``options``
    asks for, in the module docstring's order. ``batches`` are the calibration batches, read
    as many times as the algorithms need."""
    smoothing = None
    if options.smooth_quant is not None:
        smoothing = smooth_quant(float_model, batches, alpha=options.smooth_quant)
    merges: list[SyncReport] = []
    ranked_quantizer, build = candidate_builder(float_model, quantizer, batches, options, merges)
    if options.target is None:
        return AccuracyOutcome(build({}), None, smoothing, merges[-1])
    result = accuracy_fallback(
        float_model,
        ranked_quantizer,
        batches,
        options.target,
        options.metric,
        validation=options.validation,
        max_float_units=options.max_float_units,
        build=build,
        progress=progress,
    )
    return AccuracyOutcome(result.module, result, smoothing, merges[-1] if merges else None)
