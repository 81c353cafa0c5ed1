"""torchao's stock observers, built as ours: same statistics, same qparams, less time.

A vendor's spec usually names one of torchao's own observer classes (XNNPACK's, Cadence's and
torchao's X86 specs use ``HistogramObserver`` and ``PerChannelMinMaxObserver``). Ours carry the
same constructor arguments, state-dict keys and attributes and give bit-identical qparams, and
the histogram search, which dominates convert's time on those quantizers, runs about five times
faster in ours. So when a spec's constructor is exactly one of torchao's stock classes (not a
subclass: a vendor's subclass has numerics of its own), prepare builds our class with the
arguments torchao's would have received.

The stock class is recognised by its module and name, never imported. Code that checks the
prepared model with ``isinstance(observer, torchao...HistogramObserver)`` (NXP's flow does, to
swap histogram observers on integer inputs) keeps working: our class is registered as a
virtual subclass of the torchao class it stands in for, which their ``ABCMeta`` base allows.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABCMeta
from typing import Any

from pt2e_quant.observer.histogram import HistogramObserver
from pt2e_quant.observer.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

__all__ = ["StockObserver", "stock_observer"]

#: the module torchao's stock observers are defined in
TORCHAO_OBSERVER_MODULE = "torchao.quantization.pt2e.observer"

#: ours by the name of the torchao class each stands in for
_COUNTERPARTS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        MinMaxObserver,
        PerChannelMinMaxObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        HistogramObserver,
    )
}


class StockObserver:
    """Our class standing in for torchao's ``stock``, with the keywords its ``with_args`` bound."""

    def __init__(self, ours: type, stock: type, bound: dict[str, Any]) -> None:
        self.ours = ours
        self.stock = stock
        self.bound = bound

    def build(self, **call_kwargs: Any) -> Any:
        """Build ours as torchao builds theirs: keywords given at the call override the bound
        ones, ``None`` included (it means "the dtype's default" to both classes)."""
        return self.ours(**{**self.bound, **call_kwargs})


def _bound_keywords(ctor: Any) -> tuple[Any, dict[str, Any]] | None:
    """The class at the bottom of a torchao ``with_args`` chain and the keywords bound on the
    way down (an outer binding overrides an inner one); None when the chain binds positional
    or call-time-evaluated arguments, which are left to torchao's own class."""
    layers: list[dict[str, Any]] = []
    for _ in range(16):
        partial = getattr(ctor, "p", None)
        if isinstance(partial, functools.partial):
            if getattr(ctor, "callable_args", None):
                return None
        elif isinstance(ctor, functools.partial):
            partial = ctor
        else:
            break
        if partial.args:
            return None
        layers.append(dict(partial.keywords))
        ctor = partial.func
    bound: dict[str, Any] = {}
    for keywords in reversed(layers):
        bound.update(keywords)
    return ctor, bound


@functools.cache
def _parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self"}


def stock_observer(ctor: Any, call_keywords: frozenset[str]) -> StockObserver | None:
    """Our stand-in for ``ctor`` when it builds one of torchao's stock observers with keywords
    ours takes (``call_keywords`` are the ones prepare adds); None otherwise."""
    found = _bound_keywords(ctor)
    if found is None:
        return None
    stock, bound = found
    if not isinstance(stock, type) or stock.__module__ != TORCHAO_OBSERVER_MODULE:
        return None
    ours = _COUNTERPARTS.get(stock.__qualname__)
    if ours is None or not (set(bound) | call_keywords) <= _parameters(ours):
        return None
    if isinstance(stock, ABCMeta) and not issubclass(ours, stock):
        stock.register(ours)
    return StockObserver(ours, stock, bound)
