"""Edge case: degenerate calibration data and weights on the backends' observers.

Real calibration sets contain empty batches and stray NaN / Inf values, and real models have
single-channel convs and pruned (all-zero) weights. Any of these can turn a scale into zero,
NaN or Inf and silently wreck the quantized model. These tests pin the defined behaviour end
to end through both backends: empty batches are no-ops, non-finite values are dropped with a
warning naming the node, and degenerate weights still get finite, positive per-channel scales.
(The observer-level rules themselves are pinned in test_observer_degenerate_data.py.)
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.observer import NonFiniteObservationWarning
from pt2e_quant.passes.replace_observers import UncalibratedObserverWarning
from tests.core.pipeline._edge_case_pipeline import (
    DQ_CH,
    QUANTIZERS,
    close_within,
    quiet,
    run_pipeline,
    x86_quantizer,
)
from tests.models.edge_cases import ConvBatchNormDropout


def _dynamic_batch_conv(min_batch: int = 0) -> GraphModule:
    x = torch.randn(2, 3, 8, 8)
    dims = ({0: Dim("batch", min=min_batch, max=8)},)
    return torch.export.export(ConvBatchNormDropout().eval(), (x,), dynamic_shapes=dims).module()


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_empty_calibration_batch_is_a_no_op(backend: str) -> None:
    torch.manual_seed(0)
    gm = _dynamic_batch_conv()
    x, empty = torch.randn(2, 3, 8, 8), torch.randn(0, 3, 8, 8)
    with quiet():
        with_empty = run_pipeline(gm, QUANTIZERS[backend](), [(empty,), (x,), (empty,)])
        without = run_pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert torch.equal(with_empty(x), without(x))
    assert with_empty(empty).shape == (0, 4, 6, 6)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_only_empty_calibration_batches_warn_uncalibrated(backend: str) -> None:
    gm = _dynamic_batch_conv()
    prepared = prepare_pt2e(gm, QUANTIZERS[backend]())
    prepared(torch.randn(0, 3, 8, 8))
    with pytest.warns(UncalibratedObserverWarning, match="never saw data.*'x'"):
        converted = convert_pt2e(prepared)
    assert torch.isfinite(converted(torch.randn(2, 3, 8, 8))).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=str)
@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_non_finite_calibration_values_are_ignored_by_histogram_observers(backend, bad) -> None:
    """Both backends calibrate activations with HistogramObserver: a NaN / Inf value is
    dropped (with a warning) and the result equals calibrating on the clean batches alone."""
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval()
    x = torch.randn(2, 3, 8, 8)
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = bad
    gm = torch.export.export(model, (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dirty = run_pipeline(gm, QUANTIZERS[backend](), [(poisoned,), (x,)])
    assert any(issubclass(w.category, NonFiniteObservationWarning) for w in caught)
    with quiet():
        clean = run_pipeline(gm, QUANTIZERS[backend](), [(x.clone(),), (x,)])
    assert torch.equal(dirty(x), clean(x))


def test_non_finite_warning_names_the_observed_node() -> None:
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_pt2e(
        torch.export.export(ConvBatchNormDropout().eval(), (x,)).module(), x86_quantizer()
    )
    x[0, 0, 0, 0] = math.inf
    with pytest.warns(NonFiniteObservationWarning, match="'x'"):
        prepared(x)


def _converted_with_weight_scale(
    model: nn.Module, backend: str, x: Tensor
) -> tuple[GraphModule, Tensor]:
    """The converted model (calibrated on ``x``) and its one per-channel weight scale."""
    with quiet():
        converted = run_pipeline(
            torch.export.export(model, (x,)).module(), QUANTIZERS[backend](), [(x,)]
        )
    (dq,) = [n for n in converted.graph.nodes if n.target is DQ_CH]
    return converted, getattr(converted, dq.args[1].target)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_single_output_channel_gets_per_channel_qparams_of_length_one(backend: str) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout(out_channels=1).eval()
    x = torch.randn(2, 3, 8, 8)
    converted, scale = _converted_with_weight_scale(model, backend, x)
    assert scale.shape == (1,) and torch.isfinite(scale).all() and scale.item() > 0
    assert close_within(converted(x), model(x), atol=0.05)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_all_zero_conv_weight_gets_finite_scales_and_exact_zero(backend: str) -> None:
    """Zero weights and bias: every per-channel weight scale is finite and positive, and the
    output (relu of zero) comes back exactly zero."""
    model = ConvBatchNormDropout().eval()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.bn.bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    converted, scale = _converted_with_weight_scale(model, backend, x)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(converted(x), torch.zeros(2, 4, 6, 6))
