"""Which observers forget the tensor they watch as soon as their ``forward`` returns.

Prepare may let an in-place op write into a tensor an observer has already seen (see
``pt2e_quant.passes.restore_inplace_ops``). That is only right when the observer reduced the
tensor to statistics during its call and kept no reference to it: an observer that stored the
batch for later (a reservoir of samples, a recorder) would later read the overwritten values.
Our stock observers all reduce at once; the list names exact classes, because a subclass, or
anyone else's observer, may keep what it saw.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.observer.granular import PerGroupMinMaxObserver, PerTokenDynamicObserver
from pt2e_quant.observer.histogram import HistogramObserver
from pt2e_quant.observer.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from pt2e_quant.observer.passthrough import (
    DerivedObserverOrFakeQuantize,
    FixedQParamsObserver,
    PlaceholderObserver,
)

__all__ = ["INPUT_FORGETTING_OBSERVERS", "forgets_its_input"]

#: observers whose forward keeps nothing of its input but statistics (exact classes)
INPUT_FORGETTING_OBSERVERS: frozenset[type] = frozenset(
    {
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        PerChannelMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        HistogramObserver,
        PerGroupMinMaxObserver,
        PerTokenDynamicObserver,
        PlaceholderObserver,
        FixedQParamsObserver,
        DerivedObserverOrFakeQuantize,
    }
)


def forgets_its_input(module: Any) -> bool:
    """True if ``module`` is one of :data:`INPUT_FORGETTING_OBSERVERS` (not a subclass)."""
    return type(module) in INPUT_FORGETTING_OBSERVERS
