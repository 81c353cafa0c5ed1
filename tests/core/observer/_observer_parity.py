"""What the observer tests share: the torch.ao oracle, calibration sequences, comparisons.

torch.ao.quantization's observers are the oracle for every input they handle, so most
observer tests build the same observer in both libraries, feed both the same batches and
require bit-identical state and qparams. The ``test_observer_*.py`` files import that
machinery from here so every file compares the two libraries the same way.
"""

from __future__ import annotations

import warnings

import torch

import pt2e_quant.observer as ours

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch.ao.quantization.observer as ao

PER_TENSOR = ["MinMaxObserver", "MovingAverageMinMaxObserver", "HistogramObserver"]
PER_CHANNEL = ["PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"]


def calibration_batches(
    kind: str, seed: int, shape: tuple[int, ...] = (4, 3, 5)
) -> list[torch.Tensor]:
    """Calibration sequences that exercise every update path (widening, constant, tiny...)."""
    g = torch.Generator().manual_seed(seed)

    def randn(scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale + shift

    def full(value: float) -> torch.Tensor:
        return torch.full(shape, value)

    def ramp(lo: float, hi: float) -> torch.Tensor:
        # Exactly representable ranges whose re-binning puts midpoints on bin edges.
        return torch.linspace(lo, hi, torch.Size(shape).numel()).reshape(shape)

    def rand() -> torch.Tensor:
        return torch.rand(shape, generator=g)

    spiked = randn()
    spiked.view(-1)[3] = 250.0
    table = {
        "normal": lambda: [randn(1 + i, 0.3 * i) for i in range(3)],
        "widening": lambda: [randn(0.1), randn(1.0), randn(10.0, -2.0), randn(50.0, 5.0)],
        "widen_left": lambda: [randn(1.0, 3.0), randn(1.0, -4.0), randn(2.0, -20.0)],
        "widen_right": lambda: [randn(1.0, -3.0), randn(1.0, 4.0), randn(2.0, 30.0)],
        "shrinking": lambda: [randn(20.0), randn(1.0), randn(0.01)],
        "constant": lambda: [full(2.5), full(2.5)],
        "zeros": lambda: [full(0.0), full(0.0)],
        "constant_then_wide": lambda: [full(-1.5), randn(3.0), full(0.25)],
        "wide_then_constant": lambda: [randn(3.0), full(7.0), full(-9.0)],
        "tiny": lambda: [1.0 + 1e-7 * randn(), 1.0 + 3e-7 * randn(), 1e-30 * randn()],
        "positive": lambda: [rand() * 5, rand() * 7 + 1],
        "negative": lambda: [-rand() * 5, -rand() - 3],
        "outlier": lambda: [randn(), spiked, randn(0.5)],
        "heavy_tail": lambda: [torch.empty(shape).cauchy_(generator=g) for _ in range(3)],
        "integers": lambda: [torch.randint(-20, 20, shape, generator=g).float() for _ in range(2)],
        "mixed_scale": lambda: [randn(1e-3), randn(1e3), randn(1e-2, 1e2)],
        "ties": lambda: [ramp(0, 32), ramp(0, 33), ramp(-1, 33)],
    }
    return table[kind]()


KINDS = (
    "normal widening widen_left widen_right shrinking constant zeros constant_then_wide "
    "wide_then_constant tiny positive negative outlier heavy_tail integers mixed_scale ties"
).split()


def quietly(fn, *args, **kwargs):
    """Call ``fn`` with warnings silenced (torch.ao's deprecation and uncalibrated noise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def ao_and_ours(name: str, **kwargs):
    """The observer class ``name`` built with ``kwargs`` in torch.ao and in pt2e_quant."""
    return quietly(getattr(ao, name), **kwargs), quietly(getattr(ours, name), **kwargs)


def assert_same_qparams(ref, got) -> None:
    """Same (scale, zero_point): dtype, shape and every value identical."""
    for r, g in zip(ref, got, strict=True):
        assert r.dtype == g.dtype and r.shape == g.shape and torch.equal(r, g), (r, g)


def assert_same_state(ref: torch.nn.Module, got: torch.nn.Module) -> None:
    """Same state_dict: keys in the same order, dtypes and values identical."""
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert list(ref_sd) == list(got_sd)
    for key in ref_sd:
        assert ref_sd[key].dtype == got_sd[key].dtype, key
        assert torch.equal(ref_sd[key], got_sd[key]), (key, ref_sd[key], got_sd[key])


def run_both(name: str, kwargs: dict, batches: list[torch.Tensor]):
    """Feed ``batches`` to both libraries' ``name`` observer; require identical state and
    qparams, and that forward returns its input unchanged."""
    ref, got = ao_and_ours(name, **kwargs)
    for x in batches:
        out = got(x)
        ref(x)
        assert out is x
    assert_same_state(ref, got)
    assert_same_qparams(quietly(ref.calculate_qparams), quietly(got.calculate_qparams))
    return ref, got
