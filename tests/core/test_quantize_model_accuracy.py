"""quantize()'s accuracy knobs: each reachable in one call, composable, checked up front."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import quantize
from pt2e_quant.algorithms.overrides import KEPT_FOR_TARGET
from pt2e_quant.debug.sensitivity import output_sqnr
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.algorithms.test_accuracy_fallback import PlantedMLP
from tests.core.algorithms.test_smooth_quant import OutlierProjection


def _data(features: int = 16) -> list[tuple[torch.Tensor]]:
    torch.manual_seed(0)
    return [(torch.randn(8, features),) for _ in range(3)]


def _per_tensor() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))


def _quantize(model: nn.Module, features: int = 16, **knobs):
    batches = _data(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize(model.eval(), batches[0], _per_tensor(), calibration=batches,
                        progress=False, **knobs), batches  # fmt: skip


def _sqnr(model: nn.Module, converted, batches) -> float:
    with torch.no_grad():
        return output_sqnr([model(*b) for b in batches], [converted(*b) for b in batches])


def test_target_keeps_ops_float_reports_them_and_reaches_the_target() -> None:
    torch.manual_seed(1)
    model = PlantedMLP()
    plain, batches = _quantize(model)
    target = _sqnr(model, plain.module, batches) + 8
    result, _ = _quantize(model, target=target)
    assert result.fallback is not None and result.fallback.met
    assert _sqnr(model, result.module, batches) >= target
    kept = [row for row in result.coverage.rows if row.reason == KEPT_FOR_TARGET]
    assert {row.node for row in kept} == set(result.fallback.float_nodes) & {
        row.node for row in result.coverage.rows
    }
    assert kept and result.coverage.counts["kept float"] == len(kept)
    # the re-exported program computes what the module does
    example = batches[0]
    torch.testing.assert_close(result.exported_program.module()(*example), result.module(*example))


def test_a_one_shot_iterator_feeds_every_pass_of_the_algorithms() -> None:
    model = PlantedMLP()
    batches = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = quantize(model.eval(), batches[0], _per_tensor(), calibration=iter(batches),
                          progress=False, bias_correction=True, target=-100.0)  # fmt: skip
    assert result.fallback is not None and result.fallback.met


def test_bias_correction_reduces_the_mean_output_shift() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    plain, batches = _quantize(model)
    corrected, _ = _quantize(model, bias_correction=True)
    with torch.no_grad():
        reference = torch.cat([model(*b) for b in batches])
        shift_plain = (torch.cat([plain.module(*b) for b in batches]) - reference).mean(0).abs()
        shift_fixed = (torch.cat([corrected.module(*b) for b in batches]) - reference).mean(0)
    assert shift_fixed.abs().mean() < shift_plain.mean()
    # the user's model is untouched (the corrected biases are new tensors)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_smooth_quant_recovers_a_layer_norms_outlier_channels() -> None:
    torch.manual_seed(2)
    model = OutlierProjection()
    plain, batches = _quantize(model, features=32)
    smoothed, _ = _quantize(model, features=32, smooth_quant=0.5)
    assert smoothed.smoothing is not None and smoothed.smoothing.changed
    gain = _sqnr(model, smoothed.module, batches) - _sqnr(model, plain.module, batches)
    assert gain > 10, gain


def test_range_estimators_replace_the_quantizers_observers() -> None:
    from pt2e_quant.observer import MSEObserver, PerChannelMSEObserver

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
    seen: list[type] = []
    original = MSEObserver.calculate_qparams

    def spy(self):
        seen.append(type(self))
        return original(self)

    MSEObserver.calculate_qparams = spy
    try:
        result, _ = _quantize(model, range_estimator="mse", weight_range_estimator="mse")
    finally:
        MSEObserver.calculate_qparams = original
    assert MSEObserver in seen  # the activation observers convert read
    assert not issubclass(PerChannelMSEObserver, MSEObserver)
    plain, _ = _quantize(model)
    assert result.coverage.counts["quantized"] == plain.coverage.counts["quantized"] > 0


def test_every_algorithm_composes_in_one_call() -> None:
    torch.manual_seed(2)
    model = OutlierProjection()
    plain, batches = _quantize(model, features=32)
    combined, _ = _quantize(model, features=32, range_estimator="percentile",
                            weight_range_estimator="mse", smooth_quant=0.5,
                            bias_correction=True, target=-100.0)  # fmt: skip
    assert combined.fallback is not None and combined.smoothing is not None
    assert _sqnr(model, combined.module, batches) > _sqnr(model, plain.module, batches)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"range_estimator": "entropy"}, "activations"),
        ({"weight_range_estimator": "kl"}, "weights"),
        ({"smooth_quant": 1.5}, "alpha must be a number in"),
        ({"smooth_quant": True}, "alpha must be a number in"),
        ({"target": float("nan")}, "target must be a finite number"),
        ({"bias_correction": "yes"}, "bias_correction must be True or False"),
        ({"metric": lambda m: 1.0}, "need target"),
        ({"validation": [(torch.randn(8, 16),)]}, "need target"),
    ],
)
def test_bad_accuracy_knobs_are_refused_before_exporting(knobs, message) -> None:
    with pytest.raises(ValueError, match=message):
        quantize(PlantedMLP().eval(), (torch.randn(8, 16),), _per_tensor(), **knobs)


def test_the_algorithms_refuse_qat() -> None:
    with pytest.raises(ValueError, match="post-training"):
        quantize(PlantedMLP(), (torch.randn(8, 16),), qat=True, train_fn=lambda m: None,
                 bias_correction=True)  # fmt: skip


def test_the_algorithms_compose_with_the_x86_backend() -> None:
    from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    torch.manual_seed(2)
    model = OutlierProjection().eval()
    batches = _data(32)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = quantize(model, batches[0], quantizer, calibration=batches, progress=False,
                          range_estimator="mse", smooth_quant=0.5, bias_correction=True,
                          target=-100.0)  # fmt: skip
    assert result.smoothing is not None and result.smoothing.changed
    assert _sqnr(model, result.module, batches) > 15


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.slow
def test_the_algorithms_compose_with_a_hosted_quantizer() -> None:
    """ExecuTorch's XNNPACKQuantizer, written against torchao's classes: its specs are read
    into ours, so SmoothQuant's float multiplies, range estimators and bias correction all
    apply (the fallback's kept-float ops go through the same override:
    tests/core/algorithms/test_overrides.py)."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer as HostedQuantizer,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config as hosted_config,
    )

    torch.manual_seed(2)
    model = OutlierProjection().eval()
    batches = _data(32)
    hosted = HostedQuantizer().set_global(hosted_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = quantize(model, batches[0], hosted, calibration=batches, progress=False)
        tuned = quantize(model, batches[0], hosted, calibration=batches, progress=False,
                         range_estimator="mse", weight_range_estimator="mse", smooth_quant=0.5,
                         bias_correction=True)  # fmt: skip
    assert tuned.smoothing is not None and tuned.smoothing.changed
    assert _sqnr(model, tuned.module, batches) > _sqnr(model, plain.module, batches) + 10
