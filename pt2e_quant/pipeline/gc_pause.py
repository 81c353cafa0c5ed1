"""Pause Python's cyclic garbage collector while a pipeline rewrites a graph.

Copying and rewriting a large graph allocates tens of thousands of small objects (nodes,
argument tuples, metadata dicts). Each allocation burst triggers generational collections
that walk every object the process holds: right after ``torch.export`` that is millions,
and on a 200-block model those scans cost more than all our passes together. Nothing we
allocate depends on the cyclic collector (reference counting frees it), so we pause the
collector for the duration of our passes and let it run afterwards, as usual.

A quantizer's own code is not ours to tune: it may allocate in cycles (CoreML's annotate
builds and drops a graph of objects per node) and, with the collector paused, grow until
the pause ends. :func:`gc_resumed` gives it the collector back for the length of the call.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused", "gc_resumed"]

#: how many gc_paused blocks that actually paused the collector are open
_pauses = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; restore its previous state after."""
    global _pauses
    was_enabled = gc.isenabled()
    gc.disable()
    _pauses += was_enabled
    try:
        yield
    finally:
        _pauses -= was_enabled
        if was_enabled:
            gc.enable()


@contextmanager
def gc_resumed() -> Iterator[None]:
    """Inside a :func:`gc_paused` block, run the collector as the caller had it."""
    if _pauses == 0 or gc.isenabled():
        yield
        return
    gc.enable()
    try:
        yield
    finally:
        gc.disable()
