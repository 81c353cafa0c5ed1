"""The test-only memo of the peers' pattern exports: a hit only when the graph must be the same.

:func:`tests.peer_pattern_cache.memoized_pattern_export` is checked with a counting stand-in
for torchao's exporter, so no ``torch.export`` runs here.
"""

from __future__ import annotations

import torch
from torch import nn

from tests.peer_pattern_cache import memoized_pattern_export


def _counting_export():
    calls = []

    def export(pattern, example_inputs, is_cuda=False, **kwargs):
        calls.append(pattern)
        return {"graph of": len(calls)}

    return calls, memoized_pattern_export(export)


def _pattern_class(act):
    """A stateless pattern module class made per call, closing over ``act`` (CoreML's way)."""

    class Pattern(nn.Module):
        def forward(self, x, weight):
            return act(torch.nn.functional.linear(x, weight))

    return Pattern


INPUTS = (torch.randn(2, 4), torch.randn(3, 4))


def test_stateless_per_call_module_class_is_served_from_the_cache_and_copied():
    calls, export = _counting_export()
    first = export(_pattern_class(torch.relu)(), INPUTS)
    second = export(_pattern_class(torch.relu)(), INPUTS)
    assert len(calls) == 1
    assert first == second and first is not second  # callers mutate what they get


def test_different_closure_or_input_shapes_export_again():
    calls, export = _counting_export()
    export(_pattern_class(torch.relu)(), INPUTS)
    export(_pattern_class(torch.sigmoid)(), INPUTS)
    export(_pattern_class(torch.relu)(), (torch.randn(5, 4), torch.randn(3, 4)))
    assert len(calls) == 3


def test_module_with_state_or_other_attributes_is_never_cached():
    calls, export = _counting_export()

    class WithParameter(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x, weight):
            return x * self.scale

    class WithClassAttribute(nn.Module):
        act = torch.relu

        def forward(self, x, weight):
            return self.act(x)

    for cls in (WithParameter, WithClassAttribute):
        export(cls(), INPUTS)
        export(cls(), INPUTS)
    assert len(calls) == 4
