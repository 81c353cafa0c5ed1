"""prepare / convert pause the cyclic collector and always restore the caller's setting."""

from __future__ import annotations

import gc

import pytest
import torch

from pt2e_quant import prepare_pt2e
from pt2e_quant.pipeline.gc_pause import gc_paused
from tests.core.contract.quantizer_fixtures import FunctionQuantizer


def test_collector_is_paused_inside_and_restored_after():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_collector_restored_when_the_pipeline_raises():
    gm = torch.export.export(torch.nn.Linear(2, 2), (torch.randn(1, 2),)).module()
    seen = []

    def annotate(model):
        seen.append(gc.isenabled())
        raise RuntimeError("annotator failed")

    with pytest.raises(RuntimeError, match="annotator failed"):
        prepare_pt2e(gm, FunctionQuantizer(annotate))
    assert seen == [True]  # the quantizer's own code runs with the collector as the user has it
    assert gc.isenabled()


def test_gc_resumed_gives_the_collector_back_only_inside_a_pause():
    from pt2e_quant.pipeline.gc_pause import gc_resumed

    with gc_paused():
        with gc_resumed():
            assert gc.isenabled()
        assert not gc.isenabled()
    gc.disable()
    try:
        with gc_paused(), gc_resumed():
            assert not gc.isenabled()  # the user turned it off: it stays off
    finally:
        gc.enable()
