"""What a calibrated observer will do to its tensor once ``convert_pt2e`` has replaced it.

Algorithms that edit a calibrated prepared model (bias correction) need the converted model's
numbers before convert runs: ``simulator_for(observer)`` returns a function that rounds a
tensor exactly as the q/dq ops ``passes.replace_observers`` will emit for that observer, using
the same decomposed kernels and the same qparams (``calculate_qparams()``, ``quant_min`` /
``quant_max``, ``dtype``, ``qscheme`` / ``ch_axis``). The qparams of a static observer are
computed once, when the simulator is built (a histogram observer's search is costly), and the
observer's statistics are only read, never updated.

Forms, as convert emits them: static per-tensor and per-channel; dynamic per-tensor (qparams
chosen from each tensor); per-token and per-group (the LLM granularities); a float16 round
trip; any other float observer is the identity. An observer with its own ``convert`` method
(a user-defined lowering) cannot be simulated: :class:`UnsimulatedObserverError`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from pt2e_quant.contract.specs import is_per_channel
from pt2e_quant.errors import QuantizationError
from pt2e_quant.observer.granular import (
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    granular_observer,
)
from pt2e_quant.ops import qdq_ops

__all__ = ["Simulator", "UnsimulatedObserverError", "quantizes", "simulator_for"]

#: tensor -> the tensor the converted model computes in its place
Simulator = Callable[[torch.Tensor], torch.Tensor]


class UnsimulatedObserverError(QuantizationError, NotImplementedError):
    """The observer lowers itself (its own ``convert``), so its rounding cannot be simulated."""


def quantizes(observer: torch.nn.Module) -> bool:
    """Whether convert turns ``observer`` into integer quantization (not a float cast or a no-op)."""
    return qdq_ops.is_quantized_dtype(getattr(observer, "dtype", torch.float32))


def simulator_for(observer: torch.nn.Module) -> Simulator:
    """The rounding convert will apply where ``observer`` stands (see the module docstring)."""
    if callable(getattr(observer, "convert", None)):
        raise UnsimulatedObserverError(
            f"{type(observer).__name__} defines its own convert(); its q/dq ops are unknown "
            "until convert_pt2e runs"
        )
    dtype = getattr(observer, "dtype", torch.float32)
    granular = granular_observer(observer)
    if dtype == torch.float16:
        return _float16_round_trip
    if not qdq_ops.is_quantized_dtype(dtype):
        return _identity
    plain = qdq_ops.to_plain_dtype(dtype)
    bounds = (observer.quant_min, observer.quant_max, plain)
    if isinstance(granular, PerTokenDynamicObserver):
        return _per_token(observer, bounds)
    if isinstance(granular, PerGroupMinMaxObserver):
        scale, zero_point = _qparams(observer)
        return _per_group(scale, zero_point, bounds, int(granular.group_size))
    if bool(getattr(observer, "is_dynamic", False)):
        return _dynamic(observer, bounds)
    scale, zero_point = _qparams(observer)
    if is_per_channel(getattr(observer, "qscheme", None)):
        return _per_channel(scale, zero_point, int(observer.ch_axis), bounds)
    return _per_tensor(float(scale), int(zero_point), bounds)


def _qparams(observer: torch.nn.Module) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convert reports uncalibrated observers, by name
        return observer.calculate_qparams()


def _out_dtype(x: torch.Tensor) -> dict[str, Any]:
    return {} if x.dtype == torch.float32 else {"out_dtype": x.dtype}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _float16_round_trip(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(x.dtype)


def _per_tensor(scale: float, zero_point: int, bounds: tuple) -> Simulator:
    def simulate(x: torch.Tensor) -> torch.Tensor:
        q = qdq_ops.QUANTIZE_PER_TENSOR(x, scale, zero_point, *bounds)
        return qdq_ops.DEQUANTIZE_PER_TENSOR(q, scale, zero_point, *bounds, **_out_dtype(x))

    return simulate


def _per_channel(scale: Any, zero_point: Any, axis: int, bounds: tuple) -> Simulator:
    def simulate(x: torch.Tensor) -> torch.Tensor:
        q = qdq_ops.QUANTIZE_PER_CHANNEL(x, scale, zero_point, axis, *bounds)
        return qdq_ops.DEQUANTIZE_PER_CHANNEL(q, scale, zero_point, axis, *bounds, **_out_dtype(x))

    return simulate


def _dynamic(observer: torch.nn.Module, bounds: tuple) -> Simulator:
    qscheme = getattr(observer, "qscheme", torch.per_tensor_affine)
    choose = qdq_ops.CHOOSE_QPARAMS_FOR_QSCHEME.get(qscheme, qdq_ops.CHOOSE_QPARAMS)
    eps = float(getattr(observer, "eps", torch.finfo(torch.float32).eps))
    qmin, qmax, plain = bounds

    def simulate(x: torch.Tensor) -> torch.Tensor:
        scale, zero_point = choose(x, qmin, qmax, eps, plain)
        q = qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC(x, scale, zero_point, *bounds)
        return qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC(q, scale, zero_point, *bounds, **_out_dtype(x))

    return simulate


def _per_token(observer: torch.nn.Module, bounds: tuple) -> Simulator:
    choose = qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_FOR_QSCHEME[granular_observer(observer).qscheme]
    plain = bounds[2]

    def simulate(x: torch.Tensor) -> torch.Tensor:
        scale, zero_point = choose(x, plain)
        q = qdq_ops.QUANTIZE_PER_TOKEN(x, scale, zero_point, *bounds)
        return qdq_ops.DEQUANTIZE_PER_TOKEN(q, scale, zero_point, *bounds, x.dtype)

    return simulate


def _per_group(scale: Any, zero_point: Any, bounds: tuple, group_size: int) -> Simulator:
    def simulate(x: torch.Tensor) -> torch.Tensor:
        q = qdq_ops.QUANTIZE_PER_CHANNEL_GROUP(x, scale, zero_point, *bounds, group_size)
        return qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP(
            q, scale, zero_point, *bounds, group_size, x.dtype
        )

    return simulate
