"""Observers that collect nothing: their qparams are fixed, derived, or not needed at all.

They still go through the observer machinery because convert reads ``dtype`` / ``qscheme`` /
``quant_min`` / ``quant_max`` from whatever module sits on an edge, and because prepare shares
and places them exactly like statistics-collecting observers.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import (
    _EPS_F32,
    PER_CHANNEL_QSCHEMES,
    PER_TENSOR_QSCHEMES,
    ObserverBase,
    UnsupportedObserverConfigError,
    check_range_fits,
    default_quant_range,
    dtype_bounds,
)

__all__ = ["FixedQParamsObserver", "PlaceholderObserver", "DerivedObserverOrFakeQuantize"]


def _has_integer_range(dtype: Any) -> bool:
    bounds = dtype_bounds(dtype) if isinstance(dtype, torch.dtype) else None
    return bounds is not None and not dtype.is_floating_point


class FixedQParamsObserver(ObserverBase):
    """Always reports the scale / zero point it was built with (ops with a known output range,
    such as sigmoid or tanh). ``None`` for the range means the dtype's default range."""

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        quant_min: int | None = 0,
        quant_max: int | None = 255,
        is_dynamic: bool | None = False,
    ) -> None:
        owner = type(self).__name__
        if is_dynamic:
            raise UnsupportedObserverConfigError(
                f"{owner}: fixed qparams cannot be used for dynamic quantization"
            )
        dtype = torch.quint8 if dtype is None else dtype
        qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        if qscheme not in PER_TENSOR_QSCHEMES:
            raise UnsupportedObserverConfigError(
                f"{owner}: qscheme={qscheme} is not per-tensor; fixed qparams are per-tensor"
            )
        if quant_min is None or quant_max is None:
            default_min, default_max = default_quant_range(dtype, reduce_range=False)
            quant_min = default_min if quant_min is None else quant_min
            quant_max = default_max if quant_max is None else quant_max
        check_range_fits(owner, dtype, quant_min, quant_max)
        if not (isinstance(scale, numbers.Real) and math.isfinite(scale) and scale > 0):
            raise SpecError(f"{owner}: scale={scale!r} must be a positive finite float")
        if isinstance(zero_point, bool) or not isinstance(zero_point, numbers.Integral):
            raise SpecError(f"{owner}: zero_point={zero_point!r} must be an int")
        if not quant_min <= zero_point <= quant_max:
            raise SpecError(
                f"{owner}: zero_point={zero_point} is outside quant_min..quant_max "
                f"({quant_min}..{quant_max})"
            )
        super().__init__(dtype=dtype, is_dynamic=False)
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.qscheme = qscheme
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed (scale, zero_point) buffers themselves."""
        return self.scale, self.zero_point

    def extra_repr(self) -> str:
        return f"scale={self.scale}, zero_point={self.zero_point}, dtype={self.dtype}"


class PlaceholderObserver(ObserverBase):
    """Carries a configuration without observing: float16 / float32 casts (e.g. a float bias)
    and dynamic quantization, whose qparams are computed from each input at run time.

    ``compute_dtype`` is the old way of saying ``is_dynamic=True``; it still works, with a
    deprecation warning. Asking it for qparams is a usage error and raises RuntimeError.
    """

    def __init__(
        self,
        dtype: torch.dtype | None = torch.float32,
        custom_op_name: str = "",
        compute_dtype: torch.dtype | None = None,
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: torch.qscheme | None = None,
        eps: float | None = None,
        is_dynamic: bool | None = False,
    ) -> None:
        dtype = torch.float32 if dtype is None else dtype
        if compute_dtype:
            warnings.warn(
                "PlaceholderObserver(compute_dtype=...) is deprecated; pass is_dynamic=True.",
                DeprecationWarning,
                stacklevel=2,
            )
            is_dynamic = True
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        check_range_fits(type(self).__name__, dtype, quant_min, quant_max)
        self.qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.eps = _EPS_F32 if eps is None else eps
        self.custom_op = custom_op_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> Any:
        raise RuntimeError(
            "PlaceholderObserver has no qparams: it marks a float cast or dynamic quantization, "
            "whose qparams are chosen at run time"
        )

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, is_dynamic={self.is_dynamic}"


class DerivedObserverOrFakeQuantize(ObserverBase):
    """qparams computed from other observers / fake-quants (e.g. a bias scale that is the
    product of the input and weight scales).

    ``obs_or_fqs`` is kept as a plain list, not as submodules, so the sources are not duplicated
    in state_dict or in the module tree; they live where prepare inserted them. A ``None`` range
    on an integer dtype resolves to that dtype's default range, so convert always has bounds.
    """

    def __init__(
        self,
        dtype: torch.dtype,
        obs_or_fqs: list[Any],
        derive_qparams_fn: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]],
        quant_min: int | None = None,
        quant_max: int | None = None,
        qscheme: torch.qscheme | None = None,
        ch_axis: int | None = None,
    ) -> None:
        owner = type(self).__name__
        if not callable(derive_qparams_fn):
            raise SpecError(
                f"{owner}: derive_qparams_fn must be callable, got {derive_qparams_fn!r}"
            )
        if qscheme in PER_CHANNEL_QSCHEMES and ch_axis is None:
            raise SpecError(f"{owner}: qscheme={qscheme} is per-channel, so ch_axis is required")
        check_range_fits(owner, dtype, quant_min, quant_max)
        if _has_integer_range(dtype) and (quant_min is None or quant_max is None):
            default_min, default_max = default_quant_range(dtype, reduce_range=False)
            quant_min = default_min if quant_min is None else quant_min
            quant_max = default_max if quant_max is None else quant_max
        super().__init__(dtype=dtype)
        self.obs_or_fqs = list(obs_or_fqs)
        self.derive_qparams_fn = derive_qparams_fn
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.qscheme = qscheme
        self.ch_axis = ch_axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Whatever ``derive_qparams_fn`` makes of the source observers' current state."""
        return self.derive_qparams_fn(self.obs_or_fqs)
