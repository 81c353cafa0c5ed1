"""Observer foundations: constructor binding, the observer base classes, range resolution.

Everything here exists so the concrete observers can stay numerically identical to
``torch.ao.quantization``'s (same float operations in the same order) while adding what torch.ao
leaves undefined: clear errors for bad configuration, ``None`` meaning "default" for every
constructor field PT2E may pass, and defined results for uncalibrated or non-finite data.
"""

from __future__ import annotations

import abc
import functools
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pt2e_quant.errors import SpecError

__all__ = [
    "BoundConstructor",
    "ObserverBase",
    "UniformQuantizationObserverBase",
    "NonFiniteObservationWarning",
    "UnsupportedObserverConfigError",
    "check_range_fits",
    "default_quant_range",
    "dtype_bounds",
    "observing",
    "resolve_quant_range",
]

_EPS_F32 = torch.finfo(torch.float32).eps
_F32_MAX = torch.finfo(torch.float32).max


def _capped(scale: torch.Tensor) -> torch.Tensor:
    """``scale`` with inf (a range too wide to express) replaced by the largest finite value
    of float32, or of the scale's own dtype when that is narrower (float16 / bfloat16)."""
    return scale.clamp(max=min(_F32_MAX, torch.finfo(scale.dtype).max))


PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL_QSCHEMES = (
    torch.per_channel_affine,
    torch.per_channel_symmetric,
    torch.per_channel_affine_float_qparams,
)
SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)

# The dtypes a uniform observer can describe; the same set torch.ao accepts.
_UNIFORM_DTYPES = (
    torch.quint8,
    torch.qint8,
    torch.qint32,
    torch.quint4x2,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.uint16,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
)

# Integer bounds of the quantized dtypes iinfo cannot describe directly.
_QUANTIZED_BOUNDS = {
    torch.quint8: (0, 255),
    torch.qint8: (-128, 127),
    torch.qint32: (-(2**31), 2**31 - 1),
    torch.quint4x2: (0, 15),
    torch.quint2x4: (0, 3),
}


class UnsupportedObserverConfigError(SpecError, NotImplementedError):
    """An observer was asked for a combination it cannot implement (e.g. a per-channel qscheme
    on a per-tensor observer). Also a ``NotImplementedError`` because that is what torch.ao
    raises for the same requests, so existing ``except`` clauses keep working."""


class NonFiniteObservationWarning(UserWarning):
    """An observer dropped NaN or infinite input values (reported once per observer)."""


def _merge_bindings(bound: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Overlay ``new`` on ``bound``; a ``None`` never erases an earlier non-None binding.

    PT2E passes every spec field to the constructor and uses ``None`` for "not specified", so
    ``MinMaxObserver.with_args(qscheme=torch.per_tensor_symmetric)`` must stay symmetric when a
    spec leaves ``qscheme`` unset. Returns the merged mapping and the keys that took effect.
    """
    merged = dict(bound)
    applied = []
    for key, value in new.items():
        if value is None and merged.get(key) is not None:
            continue
        merged[key] = value
        applied.append(key)
    return merged, applied


class BoundConstructor:
    """A class plus keyword arguments bound ahead of time: one call builds one fresh module.

    Quantization configs are written once and instantiated per tensor, so they must be
    factories rather than instances. ``p`` is a ``functools.partial`` over the class (always the
    class itself, never another wrapper) because torch.ao, torchao and our own
    ``observer_class_of`` look at ``ctor.p.func`` / ``ctor.p.keywords``. ``callable_args`` are
    zero-argument factories evaluated at every build, for values that must not be shared
    between instances. The latest binding of a name wins, whether plain or callable, except
    that a ``None`` keeps an earlier value (see :func:`_merge_bindings`).
    """

    def __init__(
        self,
        target: Callable[..., Any],
        kwargs: dict[str, Any] | None = None,
        callable_args: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        self.p = functools.partial(target, **(kwargs or {}))
        self.callable_args: dict[str, Callable[[], Any]] = dict(callable_args or {})

    @property
    def target(self) -> Callable[..., Any]:
        """The class (or function) this constructor builds."""
        return self.p.func

    def with_args(self, **kwargs: Any) -> BoundConstructor:
        """A new constructor with more (or overriding) keyword arguments bound."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k not in self.callable_args}
        merged, applied = _merge_bindings(dict(self.p.keywords), kwargs)
        factories = {k: f for k, f in self.callable_args.items() if k not in applied}
        return BoundConstructor(self.p.func, merged, factories)

    def with_callable_args(self, **factories: Callable[[], Any]) -> BoundConstructor:
        """A new constructor whose ``factories`` are called at each build to produce arguments."""
        plain = {k: v for k, v in self.p.keywords.items() if k not in factories}
        return BoundConstructor(self.p.func, plain, {**self.callable_args, **factories})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        produced = {k: f() for k, f in self.callable_args.items() if kwargs.get(k) is None}
        merged, _ = _merge_bindings({**self.p.keywords, **produced}, kwargs)
        return self.p.func(*args, **merged)

    def __repr__(self) -> str:
        name = getattr(self.p.func, "__name__", repr(self.p.func))
        bound = ", ".join(f"{k}={v!r}" for k, v in self.p.keywords.items())
        factories = ", ".join(f"{k}=<callable>" for k in self.callable_args)
        return f"{name}.with_args({', '.join(s for s in (bound, factories) if s)})"


def _bind(cls: type, **kwargs: Any) -> BoundConstructor:
    return BoundConstructor(cls, kwargs)


def _bind_callables(cls: type, **factories: Callable[[], Any]) -> BoundConstructor:
    return BoundConstructor(cls, None, factories)


class ObserverBase(nn.Module, metaclass=abc.ABCMeta):
    """Root of every pt2e_quant observer.

    ``dtype`` and ``is_dynamic`` live here because convert reads them from every observer,
    including ones that collect no statistics. ``has_observed_data`` lets convert name the
    observers that were never calibrated instead of silently using default qparams.
    """

    def __init__(self, dtype: torch.dtype, is_dynamic: bool | None = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.is_dynamic = bool(is_dynamic)
        self._warned_non_finite = False
        #: name of the graph node this observer watches, set by prepare for messages
        self.observed_node: str | None = None

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Record statistics of ``x`` (if the observer keeps any) and return ``x`` unchanged."""

    @abc.abstractmethod
    def calculate_qparams(self) -> Any:
        """The (scale, zero_point) the recorded statistics call for."""

    def has_observed_data(self) -> bool:
        """Whether statistics exist; observers that need none count as calibrated."""
        return True

    def _report_non_finite(self) -> None:
        if not self._warned_non_finite:
            self._warned_non_finite = True
            warnings.warn(
                f"{type(self).__name__}{observing(self)} dropped NaN/Inf values from its "
                "input; they are ignored for calibration (reported once per observer).",
                NonFiniteObservationWarning,
                stacklevel=3,
            )

    with_args = classmethod(_bind)
    with_callable_args = classmethod(_bind_callables)


def observing(module: nn.Module) -> str:
    """`` of 'conv2d'`` for a module prepare attached to node ``conv2d``, else empty."""
    name = getattr(module, "observed_node", None)
    return f" of '{name}'" if name else ""


def _is_integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def dtype_bounds(dtype: torch.dtype) -> tuple[float, float] | None:
    """The values ``dtype`` can hold, or None for dtypes without fixed bounds (quint4x2...)."""
    if dtype in _QUANTIZED_BOUNDS:
        return _QUANTIZED_BOUNDS[dtype]
    if dtype.is_floating_point:
        info = torch.finfo(dtype)
        return info.min, info.max
    if dtype == torch.bool or dtype.is_complex:
        return None
    try:
        info = torch.iinfo(dtype)
    except TypeError:
        return None
    return info.min, info.max


def default_quant_range(dtype: torch.dtype, reduce_range: bool) -> tuple[int, int]:
    """The range used when no custom one is given; torch.ao's table, including its odd
    fallback of 0..15 for dtypes it has no entry for (quint4x2, float8)."""
    if dtype in (torch.qint8, torch.int8):
        return (-64, 63) if reduce_range else (-128, 127)
    if dtype in (torch.quint8, torch.uint8):
        return (0, 127) if reduce_range else (0, 255)
    if dtype in (torch.qint32, torch.int32):
        return -(2**31), 2**31 - 1
    if dtype == torch.uint16:
        return 0, 2**16 - 1
    if dtype == torch.int16:
        return -(2**15), 2**15 - 1
    return 0, 15


def check_range_fits(owner: str, dtype: torch.dtype | None, quant_min: Any, quant_max: Any) -> None:
    """Raise SpecError (a ValueError) naming the field unless the given bounds are ordered
    integers that ``dtype`` can represent. ``None`` bounds (or dtype) are skipped."""
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if value is not None and not _is_integral(value):
            raise SpecError(f"{owner}: {name} must be an int or None, got {value!r}")
    if quant_min is not None and quant_max is not None and quant_min > quant_max:
        raise SpecError(f"{owner}: quant_min={quant_min} is greater than quant_max={quant_max}")
    bounds = dtype_bounds(dtype) if isinstance(dtype, torch.dtype) else None
    if bounds is None:
        return
    low, high = bounds
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if value is not None and not low <= value <= high:
            raise SpecError(
                f"{owner}: {name}={value} does not fit dtype {dtype} (range {low}..{high})"
            )


def resolve_quant_range(
    owner: str,
    dtype: torch.dtype,
    quant_min: int | None,
    quant_max: int | None,
    reduce_range: bool,
) -> tuple[int, int, bool]:
    """(quant_min, quant_max, customized) the way torch.ao derives them, but validated.

    A custom range needs both bounds; like torch.ao a single bound is ignored (after checking
    it fits) and ``reduce_range`` halves a custom range too. Returns whether the range was
    customized because symmetric uint8 observers pick their zero point from it.
    """
    check_range_fits(owner, dtype, quant_min, quant_max)
    if quant_min is None or quant_max is None:
        low, high = default_quant_range(dtype, reduce_range)
        return low, high, False
    if quant_min == quant_max:
        raise SpecError(
            f"{owner}: quant_min={quant_min} equals quant_max; the range needs two values"
        )
    if not quant_min <= 0 <= quant_max:
        raise SpecError(
            f"{owner}: the range quant_min={quant_min}..quant_max={quant_max} must include 0"
        )
    if reduce_range:
        return quant_min // 2, quant_max // 2, True
    return int(quant_min), int(quant_max), True


class UniformQuantizationObserverBase(ObserverBase):
    """Shared configuration and the min/max -> (scale, zero_point) mapping of uniform observers.

    ``None`` for any constructor field means that field's default, because PT2E passes every
    spec field and leaves unspecified ones ``None``. ``eps`` is a buffer (as in torch.ao) so it
    follows the module across devices and checkpoints.

    qparams of a never-calibrated observer are scale 1.0 / zero_point 0 with a warning (what
    torch.ao returns). A per-channel channel that never saw a finite value is treated as an
    all-zero channel. All-zero data gives scale ``eps`` (finite and positive).
    """

    # Matches torch.ao's observer version, so checkpoints load across in both directions
    # (torch.ao renames per-channel buffers when loading versions below 3).
    _version = 3

    eps: torch.Tensor

    def __init__(
        self,
        dtype: torch.dtype | None = torch.quint8,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        dtype = torch.quint8 if dtype is None else dtype
        qscheme = self._default_qscheme() if qscheme is None else qscheme
        eps = _EPS_F32 if eps is None else eps
        owner = type(self).__name__
        super().__init__(dtype=dtype, is_dynamic=is_dynamic)
        if dtype not in _UNIFORM_DTYPES:
            raise SpecError(
                f"{owner}: dtype={dtype} is not supported; use one of "
                + ", ".join(str(d) for d in _UNIFORM_DTYPES)
            )
        if qscheme not in PER_TENSOR_QSCHEMES + PER_CHANNEL_QSCHEMES:
            raise SpecError(f"{owner}: qscheme={qscheme!r} is not a supported torch.qscheme")
        if not (isinstance(eps, numbers.Real) and 0 < float(eps) < float("inf")):
            raise SpecError(f"{owner}: eps={eps!r} must be a positive finite float")
        self.qscheme = qscheme
        self.reduce_range = bool(reduce_range)
        self.quant_min, self.quant_max, self.has_customized_qrange = resolve_quant_range(
            owner, dtype, quant_min, quant_max, self.reduce_range
        )
        self.register_buffer("eps", torch.tensor([eps], **torch.nn.factory_kwargs(factory_kwargs)))

    @classmethod
    def _default_qscheme(cls) -> torch.qscheme:
        return torch.per_tensor_affine

    def _reject_symmetric_reduced_quint8(self) -> None:
        # torch.ao refuses this combination (the reduced symmetric quint8 range has no
        # sensible zero point), so we refuse it too rather than invent numerics.
        if self.qscheme in SYMMETRIC_QSCHEMES and self.reduce_range and self.dtype == torch.quint8:
            raise UnsupportedObserverConfigError(
                f"{type(self).__name__}: reduce_range=True is not supported with a symmetric "
                "qscheme and dtype torch.quint8"
            )

    def _default_qparams(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        warnings.warn(
            f"{type(self).__name__}.calculate_qparams() was called before the observer saw "
            "any finite data; returning scale 1.0 and zero_point 0.",
            UserWarning,
            stacklevel=3,
        )
        return torch.tensor([1.0], device=device), torch.tensor([0], device=device)

    def _calculate_qparams(
        self, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """scale / zero_point for a (per-tensor or per-channel) min/max range.

        The arithmetic is torch.ao's, operation for operation, so results agree bit for bit.
        Scales are additionally capped at the largest float32 (or the statistics' own dtype's
        largest value, for float16 / bfloat16 buffers) so a range wider than float32 can
        express still yields a finite scale (torch.ao would return inf there).
        """
        if min_val.numel() == 0 or max_val.numel() == 0:
            return self._default_qparams(min_val.device)
        if min_val.dim() == 0:
            if not bool(min_val <= max_val):
                return self._default_qparams(min_val.device)
        else:
            unseen = min_val > max_val
            min_val = torch.where(unseen, torch.zeros_like(min_val), min_val)
            max_val = torch.where(unseen, torch.zeros_like(max_val), max_val)

        qmin, qmax = self.quant_min, self.quant_max
        min_neg = torch.min(min_val, torch.zeros_like(min_val))
        max_pos = torch.max(max_val, torch.zeros_like(max_val))

        if self.qscheme in SYMMETRIC_QSCHEMES:
            bound = torch.max(-min_neg, max_pos)
            scale = _capped(torch.max(bound / (float(qmax - qmin) / 2), self.eps))
            zero_point = torch.full(
                min_neg.shape,
                self._symmetric_zero_point(),
                dtype=torch.int64,
                device=min_neg.device,
            )
        elif self.qscheme == torch.per_channel_affine_float_qparams:
            scale = (max_val - min_val) / float(qmax - qmin)
            scale = torch.where(scale > self.eps, scale, torch.ones_like(scale))
            scale = _capped(scale)
            # A float zero point maps min_val exactly onto the first quantized value.
            zero_point = -min_val / scale
        else:
            scale = torch.max((max_pos - min_neg) / float(qmax - qmin), self.eps)
            scale = _capped(scale)
            zero_point = qmin - torch.round(min_neg / scale).to(torch.int)
            zero_point = torch.clamp(zero_point, qmin, qmax)

        # Per-tensor results are 1-element vectors, the shape FakeQuantize buffers have.
        if scale.dim() == 0:
            scale = scale.reshape(1)
        if zero_point.dim() == 0:
            zero_point = zero_point.reshape(1)
        return scale, zero_point

    def _symmetric_zero_point(self) -> int:
        if self.dtype in (torch.quint8, torch.uint8):
            # The middle of an unsigned range; torch.ao rounds a custom range's middle down.
            if self.has_customized_qrange:
                return (self.quant_min + self.quant_max) // 2
            return 128
        if self.dtype == torch.uint16:
            return 2**15
        return 0

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Checkpoints from before eps became a buffer (version 1) carry no eps; use the default.
        version = local_metadata.get("version")
        if (version is None or version < 2) and prefix + "eps" not in state_dict:
            state_dict[prefix + "eps"] = torch.tensor([_EPS_F32])
        for name in self._resizable_buffers():
            value = state_dict.get(prefix + name)
            buffer = getattr(self, name, None)
            if isinstance(value, torch.Tensor) and isinstance(buffer, torch.Tensor):
                if buffer.shape != value.shape:
                    buffer.resize_(value.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _resizable_buffers(self) -> tuple[str, ...]:
        """Buffers whose shape depends on the data (resized when a checkpoint is loaded)."""
        return ()

    def reset_min_max_vals(self) -> None:
        """Forget the recorded statistics."""
        raise NotImplementedError(f"{type(self).__name__} keeps no resettable statistics")
