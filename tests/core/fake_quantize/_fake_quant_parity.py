"""Lock-step comparison of two fake-quant modules, ours against a reference from torch.ao.

Shared by the fake-quant test files: each drives a reference module and ours through the same
inputs and demands identical outputs, input gradients, state dicts and qparams, because a QAT
checkpoint must behave the same whichever library produced it. torch.ao's modules are imported
here once, with their deprecation warnings silenced.
"""

from __future__ import annotations

import warnings

import torch

import pt2e_quant.observer as ours_obs
from tests.core.observer._observer_parity import assert_same_state

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.quantization.fake_quantize as ao
    import torch.ao.quantization.observer as ao_obs

__all__ = [
    "ao",
    "ao_obs",
    "assert_same_pair",
    "assert_same_state",
    "observer_pair",
    "quiet",
    "run_parity_script",
    "step_both",
]


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with warnings silenced (torch.ao's modules warn that they are deprecated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def observer_pair(name: str):
    """The observer class called ``name`` from torch.ao and from pt2e_quant."""
    return getattr(ao_obs, name), getattr(ours_obs, name)


def assert_same_pair(ref, got) -> None:
    for r, g in zip(ref, got, strict=True):
        assert r.dtype == g.dtype and r.shape == g.shape and torch.equal(r, g), (r, g)


def step_both(ref: torch.nn.Module, got: torch.nn.Module, x: torch.Tensor) -> None:
    """One forward/backward through each module on identical inputs; outputs, input gradients
    and state must agree exactly."""
    x_ref = x.clone().requires_grad_()
    x_got = x.clone().requires_grad_()
    y_ref = quiet(ref, x_ref)
    y_got = quiet(got, x_got)
    assert y_ref.dtype == y_got.dtype and torch.equal(y_ref, y_got)
    upstream = torch.linspace(-1, 2, y_ref.numel()).reshape(y_ref.shape)
    y_ref.backward(upstream)
    y_got.backward(upstream)
    assert torch.equal(x_ref.grad, x_got.grad)
    assert_same_state(ref, got)


def run_parity_script(ref, got, shape=(4, 3, 5), seed=0) -> None:
    """Several steps, widening ranges, with the observer and fake-quant switched off and on."""
    g = torch.Generator().manual_seed(seed)
    schedule = [(True, True), (True, True), (False, True), (True, False), (True, True)]
    for i, (observe, fake_quant) in enumerate(schedule):
        for module in (ref, got):
            module.enable_observer(observe)
            module.enable_fake_quant(fake_quant)
        x = torch.randn(shape, generator=g) * (1 + 2 * i) + 0.5 * i
        step_both(ref, got, x)
    assert_same_pair(quiet(ref.calculate_qparams), quiet(got.calculate_qparams))
