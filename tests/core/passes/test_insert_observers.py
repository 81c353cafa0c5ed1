"""insert_observers: where observers go when a tensor is written in place through an alias.

After convert an observer is a quantize/dequantize copy. A copy taken before an in-place write
(through a view, or an op that returns its input) and read after it would miss the write, so
such edges keep reading the original tensor and stay float, with a warning naming them.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.passes.insert_observers import AliasedWriteWarning
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models import ZOO


class WriteThroughView(nn.Module):
    """``a = x * 2``; ``a.view(-1) += x`` writes into ``a``; the mul after must see it::

    a ─ view ─ add_(x) ──────────── sub
    └───────────────── mul(0.5) ──┘
    """

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = a.view(-1)
        b += x
        return b - a * 0.5


class WriteThroughEvalDropout(nn.Module):
    """Eval-mode dropout returns its input, so ``hardtanh_`` on it clamps ``a`` as well."""

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = nn.functional.dropout(a, 0.5, training=False)
        nn.functional.hardtanh_(b)
        return b * a


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config())


@pytest.mark.parametrize("model_cls", [WriteThroughView, WriteThroughEvalDropout])
def test_reads_after_an_aliased_write_see_it_after_convert(model_cls) -> None:
    """(torchao quantizes these edges and its converted model reads the stale value: off by
    up to 1.5 on WriteThroughView's [-4.5, 4.5] outputs.)"""
    x = torch.linspace(-3, 3, 8)
    model = model_cls().eval()
    exported = torch.export.export(model, (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare_pt2e(exported, _xnnpack())
    assert torch.equal(prepared(x), model(x))
    converted = convert_pt2e(prepared)
    assert (converted(x) - model(x)).abs().max() < 0.1
    messages = [str(w.message) for w in caught if issubclass(w.category, AliasedWriteWarning)]
    if model_cls is WriteThroughView:
        (message,) = messages
        assert "'mul'" in message and "written by 'add_'" in message


def test_the_write_itself_is_not_quantized_away() -> None:
    """The view and the in-place add keep operating on the real tensor: no q/dq between."""
    x = torch.linspace(-3, 3, 8)
    exported = torch.export.export(WriteThroughView().eval(), (x,)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AliasedWriteWarning)
        converted = convert_pt2e(prepare_pt2e(exported, _xnnpack()))
    nodes = {n.name: n for n in converted.graph.nodes}
    assert nodes["view"].args[0] is nodes["mul"]
    assert nodes["add_"].args[0] is nodes["view"]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_have_no_aliased_writes(name: str) -> None:
    """Functional rewriting leaves no in-place write in the zoo, so nothing stays float."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    exported = torch.export.export(model, model.example_inputs()).module()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AliasedWriteWarning)
        prepare_pt2e(exported, _xnnpack())
