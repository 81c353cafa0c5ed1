"""torchao's stock observer classes built as ours (pt2e_quant.observer.stock).

A vendor's spec that names torchao's ``HistogramObserver`` (or a min/max one) gets ours, so
ours must be interchangeable with it: the same arguments reach it (bound ``with_args``
keywords, overridden by prepare's, ``None`` included), the same state and qparams come out
for every calibration sequence the parity tests use, and ``isinstance`` checks against
torchao's class keep holding. A vendor's subclass, or a ctor we cannot read, is left alone.
"""

from __future__ import annotations

import functools

import pytest
import torch

import pt2e_quant.observer as ours
from pt2e_quant.observer.stock import stock_observer
from tests.core.observer._observer_parity import KINDS, calibration_batches, quietly

torchao_observer = pytest.importorskip("torchao.quantization.pt2e.observer")
pytestmark = pytest.mark.torchao

STOCK = [
    ("MinMaxObserver", {"dtype": torch.int8, "qscheme": torch.per_tensor_affine}),
    ("MinMaxObserver", {"dtype": torch.int8, "qscheme": torch.per_tensor_symmetric}),
    ("MovingAverageMinMaxObserver", {"dtype": torch.uint8, "quant_min": 0, "quant_max": 255}),
    (
        "PerChannelMinMaxObserver",
        {"dtype": torch.int8, "qscheme": torch.per_channel_symmetric, "ch_axis": 1},
    ),
    (
        "MovingAveragePerChannelMinMaxObserver",
        {"dtype": torch.int8, "qscheme": torch.per_channel_affine, "ch_axis": 0},
    ),
    ("HistogramObserver", {"dtype": torch.int8, "quant_min": -128, "quant_max": 127}),
    (
        "HistogramObserver",
        {"dtype": torch.int8, "qscheme": torch.per_tensor_symmetric, "eps": 2**-12},
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("name", "kwargs"), STOCK, ids=lambda v: str(v)[:40])
def test_stand_in_matches_torchao_state_and_qparams(name: str, kwargs: dict, kind: str) -> None:
    stock = getattr(torchao_observer, name)
    stand_in = stock_observer(stock, frozenset(kwargs))
    assert stand_in is not None and stand_in.ours is getattr(ours, name)
    theirs, mine = stock(**kwargs), stand_in.build(**kwargs)
    for batch in calibration_batches(kind, seed=len(kind)):
        quietly(theirs, batch.clone())
        quietly(mine, batch.clone())
    for key, value in theirs.state_dict().items():
        assert torch.equal(mine.state_dict()[key], value), key
    for a, b in zip(
        quietly(theirs.calculate_qparams), quietly(mine.calculate_qparams), strict=True
    ):
        assert torch.equal(a, b) and a.dtype == b.dtype


def test_bound_keywords_reach_ours_and_later_ones_win() -> None:
    ctor = torchao_observer.HistogramObserver.with_args(eps=2**-12, bins=64).with_args(bins=32)
    stand_in = stock_observer(ctor, frozenset({"dtype", "quant_min", "quant_max"}))
    observer = stand_in.build(dtype=torch.int8, quant_min=-127, quant_max=127)
    assert type(observer) is ours.HistogramObserver
    assert observer.bins == 32 and observer.eps.item() == 2**-12
    assert (observer.quant_min, observer.quant_max) == (-127, 127)


def test_prepare_keyword_none_overrides_a_bound_range_as_in_torchao() -> None:
    """torchao calls the ctor with the spec's ``quant_min=None``, which replaces a bound -127:
    the dtype's full range. Ours must end up with the same range."""
    ctor = torchao_observer.MinMaxObserver.with_args(quant_min=-127, quant_max=127)
    call = {"dtype": torch.int8, "quant_min": None, "quant_max": None}
    theirs = ctor(**call)
    mine = stock_observer(ctor, frozenset(call)).build(**call)
    assert (mine.quant_min, mine.quant_max) == (theirs.quant_min, theirs.quant_max) == (-128, 127)


def test_stand_in_passes_isinstance_checks_against_torchao_class() -> None:
    """NXP's flow swaps ``isinstance(obs, HistogramObserver)`` observers after prepare."""
    observer = stock_observer(torchao_observer.HistogramObserver, frozenset()).build()
    assert isinstance(observer, torchao_observer.HistogramObserver)
    assert isinstance(observer, ours.HistogramObserver)


def test_vendor_subclass_and_unreadable_ctors_stay_foreign() -> None:
    class VendorHistogram(torchao_observer.HistogramObserver):
        pass

    def factory(**kwargs):
        return torchao_observer.MinMaxObserver(**kwargs)

    with_callable = torchao_observer.MinMaxObserver.with_callable_args(
        factory_kwargs=lambda: {"device": "cpu"}
    )
    positional = functools.partial(torchao_observer.MinMaxObserver, torch.int8)
    for ctor in (VendorHistogram, factory, with_callable, positional, ours.MinMaxObserver):
        assert stock_observer(ctor, frozenset()) is None, ctor
    # a keyword ours does not take (torchao's take **kwargs) keeps torchao's class
    assert stock_observer(torchao_observer.MinMaxObserver, frozenset({"ch_axis"})) is None


def test_prepare_builds_ours_for_a_torchao_quantizer_and_converts_alike() -> None:
    """torchao's X86InductorQuantizer names torchao's HistogramObserver and
    PerChannelMinMaxObserver: the prepared model holds ours, and convert gives torchao's
    pipeline's output bit for bit."""
    import copy

    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    import pt2e_quant

    def quantizer():
        return xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config()
        )

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    example = (torch.randn(2, 3, 8, 8),)
    exported = torch.export.export(model, example, strict=True).module()
    outputs = []
    for prepare, convert in (
        (prepare_pt2e, convert_pt2e),
        (pt2e_quant.prepare_pt2e, pt2e_quant.convert_pt2e),
    ):
        prepared = prepare(copy.deepcopy(exported), quantizer())
        kinds = {type(m) for m in prepared.modules() if "Observer" in type(m).__name__}
        prepared(*example)
        outputs.append((kinds, convert(prepared)(*example)))
    (theirs_kinds, theirs), (our_kinds, mine) = outputs
    assert {k.__module__.split(".")[0] for k in theirs_kinds} == {"torchao"}
    assert our_kinds == {ours.HistogramObserver, ours.PerChannelMinMaxObserver}
    assert torch.equal(theirs, mine)
