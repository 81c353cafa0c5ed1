"""Which observers can be merged across ranks, recognised by their state, and how each kind merges.

A prepared model may hold our observers, torch.ao's or torchao's (a quantizer written for
torchao hands us its constructors), or a vendor's subclass. Merging needs to know what the
state *means*, so an observer is classified by the tensors it keeps, not by its class name
(rows of :data:`MERGE_KINDS`, tried in this order):

* ``range_histogram``: a :class:`HistogramRangeObserver` (percentile, MSE, KL estimators);
  exact count merge, see :mod:`.histogram_merge`.
* ``histogram``: buffers ``histogram`` / ``min_val`` / ``max_val`` and an int ``bins``
  (torch.ao's HistogramObserver algorithm); rank-order fold, see :mod:`.histogram_merge`.
* ``moving_average``: buffers ``min_val`` / ``max_val`` and an ``averaging_constant``; float64
  mean of the running values of the ranks that saw data (per channel: the ranks whose channel
  is finite), see below.
* ``no_state``: fixed-qparams, placeholder, per-token dynamic and derived observers (ours,
  torch.ao's, torchao's); nothing to merge, the settings must agree.
* ``min_max``: buffers ``min_val`` / ``max_val`` (plus only ``eps`` and ``clip_min`` /
  ``clip_max``); elementwise min / max over the ranks that saw data, which is the state one
  process over all shards ends with, bit for bit.

An observer with any other buffer (a third-party observer keeping, say, a running mean) is
refused rather than merged by the part of its state we understand. Fake-quants are handled
through their ``activation_post_process``.

Moving averages depend on the order of the batches, so no merge can reproduce one process over
the concatenated shards. The mean of the ranks' running values is exact in one case: when every
rank saw the same batches in the same order, every rank holds the same value and the float64
mean returns it unchanged, i.e. the state of one process that ran one rank's batches.
Otherwise it is an average of the ranks' EMAs (each weighting its own recent batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pt2e_quant.distributed.histogram_merge import (
    MergeShapeError,
    State,
    merge_histograms,
    merge_range_histograms,
)
from pt2e_quant.fake_quantize.base import _foreign_types
from pt2e_quant.observer.granular import PerTokenDynamicObserver
from pt2e_quant.observer.passthrough import (
    DerivedObserverOrFakeQuantize,
    FixedQParamsObserver,
    PlaceholderObserver,
)
from pt2e_quant.observer.range_histogram import HistogramRangeObserver

__all__ = [
    "MERGE_KINDS",
    "MergeKind",
    "MergeShapeError",
    "State",
    "is_stateless_observer",
    "kind_of",
    "merge_min_max",
    "merge_moving_average",
    "simple_settings",
    "supported_kinds",
]

_EXTREMES = ("min_val", "max_val")
_CLIPS = ("clip_min", "clip_max")
_STATELESS_NAMES = (
    "FixedQParamsObserver",
    "PlaceholderObserver",
    "NoopObserver",
    "ReuseInputObserver",
    "PerTokenDynamicObserver",
    "DerivedObserverOrFakeQuantize",
)


def _buffers(module: nn.Module) -> set[str]:
    return {name for name, _ in module.named_buffers(recurse=False)}


def _stateless_types() -> tuple[type, ...]:
    return (
        FixedQParamsObserver,
        PlaceholderObserver,
        PerTokenDynamicObserver,
        DerivedObserverOrFakeQuantize,
        *_foreign_types("torch.ao.quantization.observer", *_STATELESS_NAMES),
        *_foreign_types("torchao.quantization.pt2e.observer", *_STATELESS_NAMES),
    )


def _is_range_histogram(module: nn.Module) -> bool:
    return isinstance(module, HistogramRangeObserver)


def _is_histogram(module: nn.Module) -> bool:
    needed = {"histogram", *_EXTREMES}
    return (
        not _is_range_histogram(module)
        and needed <= _buffers(module) <= needed | {"eps"}
        and isinstance(getattr(module, "bins", None), int)
    )


def _has_min_max_state(module: nn.Module) -> bool:
    return set(_EXTREMES) <= _buffers(module) <= {*_EXTREMES, *_CLIPS, "eps"}


def _is_moving_average(module: nn.Module) -> bool:
    return _has_min_max_state(module) and hasattr(module, "averaging_constant")


def _is_min_max(module: nn.Module) -> bool:
    return (
        _has_min_max_state(module)
        and not hasattr(module, "averaging_constant")
        and not isinstance(module, HistogramRangeObserver)
    )


def is_stateless_observer(module: nn.Module) -> bool:
    """An observer that keeps no statistics (fixed qparams, placeholder, per-token dynamic,
    derived; ours, torch.ao's or torchao's): nothing to merge or synchronise."""
    return isinstance(module, _stateless_types())


def _present_pairs(states: list[State]) -> list[tuple[str, str]]:
    names = set().union(*(state.keys() for state in states)) if states else set()
    return [pair for pair in (_EXTREMES, _CLIPS) if set(pair) <= names]


def _with_data(states: list[State], low: str) -> list[State]:
    """The states that hold statistics for ``low``'s pair (empty per-channel buffers do not),
    checked to agree in shape."""
    holding = [state for state in states if state[low].numel() > 0]
    shapes = {tuple(state[low].shape) for state in holding}
    if len(shapes) > 1:
        raise MergeShapeError(
            f"ranks hold '{low}' of different shapes {sorted(shapes)}; every rank must run the "
            "same prepared program on inputs of the same layout"
        )
    return holding


def merge_min_max(states: list[State]) -> State | None:
    """Fold the ranks' extremes in rank order with ``torch.min(new, running)`` /
    ``torch.max(new, running)``, the operations (and argument order, which decides which
    of two equal signed zeros is kept) the observers use batch by batch. Never-updated
    scalars (+inf / -inf) are identities; empty per-channel buffers are skipped."""
    merged: State = {}
    for low, high in _present_pairs(states):
        holding = _with_data(states, low)
        if not holding:
            continue
        running_low, running_high = holding[0][low], holding[0][high]
        for state in holding[1:]:
            running_low = torch.min(state[low], running_low)
            running_high = torch.max(state[high], running_high)
        merged[low], merged[high] = running_low, running_high
    return merged or None


def merge_moving_average(states: list[State]) -> State | None:
    """Float64 mean of the running extremes over the ranks holding them (per channel: the
    ranks whose channel is finite); a channel no rank saw stays +inf / -inf."""
    holding = _with_data(states, "min_val")
    if not holding:
        return None
    lows = torch.stack([state["min_val"] for state in holding])
    highs = torch.stack([state["max_val"] for state in holding])
    seen = torch.isfinite(lows) & torch.isfinite(highs)
    if not bool(seen.any()):
        return None
    count = seen.sum(dim=0)
    zero = torch.zeros((), dtype=torch.float64)
    mean_low = torch.where(seen, lows.double(), zero).sum(dim=0) / count.clamp(min=1)
    mean_high = torch.where(seen, highs.double(), zero).sum(dim=0) / count.clamp(min=1)
    unseen = count == 0
    mean_low = torch.where(unseen, float("inf"), mean_low).to(lows.dtype)
    mean_high = torch.where(unseen, float("-inf"), mean_high).to(highs.dtype)
    return {"min_val": mean_low, "max_val": mean_high}


@dataclass(frozen=True)
class MergeKind:
    """One row of the merge table."""

    name: str
    #: whether a module's state is this kind
    matches: Callable[[nn.Module], bool]
    #: buffers carrying the statistics (exported and rewritten); other buffers are configuration
    state_buffers: Callable[[nn.Module], tuple[str, ...]]
    #: the merged state from every rank's state (rank order), or None to leave it as it is;
    #: the module is passed for kinds that need its settings (histogram bins)
    merge: Callable[[nn.Module, list[State]], State | None]
    #: whether the merge adds the ranks' data (so a rank's state must not be counted twice)
    additive: bool
    described: str


def _min_max_buffers(module: nn.Module) -> tuple[str, ...]:
    return tuple(name for name in (*_EXTREMES, *_CLIPS) if name in _buffers(module))


def _range_histogram_buffers(module: nn.Module) -> tuple[str, ...]:
    return ("histogram", "first_bin", "width_exponent", *_EXTREMES)


def _no_merge(module: nn.Module, states: list[State]) -> None:
    return None


def _merge_kinds() -> tuple[MergeKind, ...]:
    return (
        MergeKind(
            "range_histogram",
            _is_range_histogram,
            _range_histogram_buffers,
            merge_range_histograms,
            additive=True,
            described="range estimators (PercentileObserver, MSEObserver, KLDivergenceObserver)",
        ),
        MergeKind(
            "histogram",
            _is_histogram,
            lambda module: ("histogram", *_EXTREMES),
            merge_histograms,
            additive=True,
            described="HistogramObserver (histogram / min_val / max_val buffers and bins)",
        ),
        MergeKind(
            "moving_average",
            _is_moving_average,
            lambda module: _EXTREMES,
            lambda module, states: merge_moving_average(states),
            additive=False,
            described="moving-average min/max observers (min_val / max_val, averaging_constant)",
        ),
        MergeKind(
            "no_state",
            is_stateless_observer,
            lambda module: (),
            _no_merge,
            additive=False,
            described="FixedQParams, Placeholder, PerTokenDynamic and derived observers",
        ),
        MergeKind(
            "min_max",
            _is_min_max,
            _min_max_buffers,
            lambda module, states: merge_min_max(states),
            additive=False,
            described="min/max observers, per tensor, per channel or per group (buffers "
            "min_val / max_val, optionally clip_min / clip_max and eps, nothing else)",
        ),
    )


MERGE_KINDS: tuple[MergeKind, ...] = _merge_kinds()


def kind_of(module: nn.Module) -> MergeKind | None:
    """The first row of :data:`MERGE_KINDS` whose shape ``module`` has, or None."""
    for kind in MERGE_KINDS:
        if kind.matches(module):
            return kind
    return None


def supported_kinds() -> str:
    """The supported kinds, one per clause, for error messages."""
    return "; ".join(kind.described for kind in MERGE_KINDS)


def simple_settings(module: Any) -> dict[str, str]:
    """The module's plain settings (numbers, strings, dtypes, qschemes) as strings, to compare
    across ranks: two ranks whose observer settings differ run different programs."""
    plain = (bool, int, float, str, torch.dtype, torch.qscheme, type(None))
    settings = {
        name: repr(value)
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in ("training", "observed_node")
        and isinstance(value, plain)
    }
    settings["class"] = f"{type(module).__module__}.{type(module).__qualname__}"
    return settings
