"""``LearnableFakeQuantize`` (LSQ-style learned scale and zero point) matches its references.

Learned-qparams QAT is only trustworthy if the learned scale and zero point evolve exactly as in
the implementations users migrate from. So ours is stepped in lock step with torchao's pt2e
``LearnableFakeQuantize`` and with torch.ao's ``_LearnableFakeQuantize`` kernels (outputs, input
and parameter gradients, SGD updates, qparams), and its lifecycle is pinned: lazy qparams before
the first forward, range-learning switches, state-dict restore and range validation.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import pt2e_quant.fake_quantize as ours
import pt2e_quant.observer as ours_obs
from tests.core.fake_quantize._fake_quant_parity import (
    assert_same_pair,
    assert_same_state,
    observer_pair,
    quiet,
)


def _torchao_learnable():
    pytest.importorskip("torchao")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module("torchao.quantization.pt2e.learnable_fake_quantize")
        ao_observer = importlib.import_module("torchao.quantization.pt2e.observer")
    return module, ao_observer


@pytest.mark.torchao
@pytest.mark.parametrize(
    ("observer", "kwargs"),
    [
        ("MovingAverageMinMaxObserver", {}),
        (
            "MovingAverageMinMaxObserver",
            {
                "dtype": torch.qint8,
                "qscheme": torch.per_tensor_symmetric,
                "quant_min": -128,
                "quant_max": 127,
                "use_grad_scaling": True,
            },
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {
                "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric,
                "quant_min": -127,
                "quant_max": 127,
                "ch_axis": 1,
            },
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {"qscheme": torch.per_channel_affine, "use_grad_scaling": True},
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_learnable_fake_quantize_matches_torchao(observer, kwargs):
    learnable, tao_obs = _torchao_learnable()
    ref = learnable.LearnableFakeQuantize(getattr(tao_obs, observer), **kwargs)
    got = ours.LearnableFakeQuantize(getattr(ours_obs, observer), **kwargs)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        if step == 2:
            ref.enable_range_learning()
            got.enable_range_learning()
        x = torch.randn(4, 3, 5, generator=g) * (step + 1)
        x_ref, x_got = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_got = ref(x_ref), got(x_got)
        assert torch.equal(y_ref, y_got)
        upstream = torch.linspace(-1, 1, y_ref.numel()).reshape(y_ref.shape)
        y_ref.backward(upstream)
        y_got.backward(upstream)
        assert torch.equal(x_ref.grad, x_got.grad)
        for name in ("scale", "zero_point"):
            p_ref, p_got = getattr(ref, name), getattr(got, name)
            assert p_ref.requires_grad == p_got.requires_grad
            if p_ref.grad is not None or p_got.grad is not None:
                assert torch.equal(p_ref.grad, p_got.grad), name
                with torch.no_grad():  # a plain SGD step, identical on both sides
                    p_ref -= 1e-5 * p_ref.grad
                    p_got -= 1e-5 * p_got.grad
                p_ref.grad, p_got.grad = None, None
        assert_same_state(ref, got)
    assert_same_pair(ref.calculate_qparams(), got.calculate_qparams())
    ref.enable_observer()
    got.enable_observer()
    assert not got.scale.requires_grad and got.learning_enabled[0] == 0


@pytest.mark.parametrize(
    ("observer", "kwargs", "channels"),
    [
        ("MovingAverageMinMaxObserver", {"quant_min": 0, "quant_max": 255}, -1),
        (
            "MovingAverageMinMaxObserver",
            {
                "quant_min": -128,
                "quant_max": 127,
                "dtype": torch.qint8,
                "qscheme": torch.per_tensor_symmetric,
                "use_grad_scaling": True,
            },
            -1,
        ),
        (
            "MovingAveragePerChannelMinMaxObserver",
            {
                "quant_min": -128,
                "quant_max": 127,
                "dtype": torch.qint8,
                "qscheme": torch.per_channel_symmetric,
            },
            4,
        ),
    ],
    ids=["affine", "symmetric-grad-scaling", "per-channel"],
)
def test_learnable_fake_quantize_matches_torch_ao_kernels(observer, kwargs, channels):
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize

    ref_obs, got_obs = observer_pair(observer)
    ref = quiet(_LearnableFakeQuantize, ref_obs, channel_len=channels, **kwargs)
    got = ours.LearnableFakeQuantize(got_obs, **kwargs)
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        if step == 2:
            ref.enable_param_learning()
            got.enable_range_learning()
            ref.scale.grad = ref.zero_point.grad = None  # torch.ao's params always had grads
        x = torch.randn(4, 3, 5, generator=g) * (step + 1)
        x_ref, x_got = x.clone().requires_grad_(), x.clone().requires_grad_()
        y_ref, y_got = ref(x_ref), got(x_got)
        assert torch.equal(y_ref, y_got)
        upstream = torch.linspace(-1, 1, y_ref.numel()).reshape(y_ref.shape)
        y_ref.backward(upstream)
        y_got.backward(upstream)
        assert torch.equal(x_ref.grad, x_got.grad)
        if step >= 2:
            for name in ("scale", "zero_point"):
                p_ref, p_got = getattr(ref, name), getattr(got, name)
                assert torch.equal(p_ref.grad, p_got.grad), name
                with torch.no_grad():  # small enough to keep the scale above eps
                    p_ref -= 1e-5 * p_ref.grad
                    p_got -= 1e-5 * p_got.grad
                p_ref.grad, p_got.grad = None, None
        assert torch.equal(ref.scale, got.scale) and torch.equal(ref.zero_point, got.zero_point)
    assert_same_pair(ref.calculate_qparams(), got.calculate_qparams())


def test_learnable_fake_quantize_lifecycle():
    fq = ours.LearnableFakeQuantize(
        ours_obs.MovingAverageMinMaxObserver, quant_min=None, quant_max=None, dtype=torch.qint8
    )
    assert (fq.quant_min, fq.quant_max) == (-128, 127)
    assert not fq.has_observed_data() and fq.scale is None
    with pytest.raises(RuntimeError, match="first forward"):
        fq.calculate_qparams()
    fq(torch.randn(8))
    assert fq.has_observed_data() and isinstance(fq.scale, torch.nn.Parameter)
    ours.enable_range_learning(fq)
    assert fq.scale.requires_grad and fq.observer_enabled[0] == 0
    ours.disable_range_learning(fq)
    assert not fq.zero_point.requires_grad
    restored = ours.LearnableFakeQuantize(
        ours_obs.MovingAverageMinMaxObserver, quant_min=None, quant_max=None, dtype=torch.qint8
    )
    restored.load_state_dict(fq.state_dict())
    assert torch.equal(restored.scale, fq.scale) and restored.has_observed_data()
    with pytest.raises(ValueError, match="quant_min=5"):
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver, quant_min=5, quant_max=5)
    with pytest.raises(ValueError, match="quant_max=255"):
        ours.LearnableFakeQuantize(ours_obs.MovingAverageMinMaxObserver, dtype=torch.qint8)
