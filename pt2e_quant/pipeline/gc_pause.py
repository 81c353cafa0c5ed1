"""Pause Python's cyclic garbage collector while a pipeline rewrites a graph.

Copying and rewriting a large graph allocates tens of thousands of small objects (nodes,
argument tuples, metadata dicts). Each allocation burst triggers generational collections
that walk every object the process holds: right after ``torch.export`` that is millions,
and on a 200-block model those scans cost more than all our passes together. Nothing we
allocate depends on the cyclic collector (reference counting frees it), so we pause the
collector for the duration of prepare / convert and let it run afterwards, as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its previous state after."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
