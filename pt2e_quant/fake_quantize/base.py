"""Fake-quantize modules for QAT, plus the predicates and switches that work across libraries.

A fake-quant rounds its input to the quantized grid and back in float, so training sees the
quantization error while gradients flow (straight-through). ``FakeQuantize`` owns an observer
(``activation_post_process``) that keeps its qparams current; scale and zero point are buffers so
they survive ``state_dict`` and follow ``.to(device)``.

The helpers at the bottom (``is_observer_or_fake_quant``, ``enable_observer`` ...) also accept
torch.ao's and torchao's modules, because prepared models may hold a mix: a quantizer written
for torchao can hand us torchao observer constructors. They look those libraries up in
``sys.modules`` rather than importing them: a module that was never imported cannot have
instances.
"""

from __future__ import annotations

import abc
import sys
import warnings
from typing import Any

import torch
from torch import nn

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import (
    PER_CHANNEL_QSCHEMES,
    PER_TENSOR_QSCHEMES,
    NonFiniteObservationWarning,
    ObserverBase,
    _bind,
    _bind_callables,
    check_range_fits,
    observing,
)
from pt2e_quant.observer.minmax import MovingAverageMinMaxObserver
from pt2e_quant.observer.passthrough import FixedQParamsObserver

__all__ = [
    "FakeQuantizeBase",
    "FakeQuantize",
    "FixedQParamsFakeQuantize",
    "is_observer_or_fake_quant",
    "enable_observer",
    "disable_observer",
    "enable_fake_quant",
    "disable_fake_quant",
    "observer_has_data",
]


def _foreign_types(module_name: str, *names: str) -> tuple[type, ...]:
    module = sys.modules.get(module_name)
    if module is None:
        return ()
    found = (getattr(module, name, None) for name in names)
    return tuple(t for t in found if isinstance(t, type))


def _observer_types() -> tuple[type, ...]:
    return (
        ObserverBase,
        *_foreign_types(
            "torch.ao.quantization.observer", "ObserverBase", "AffineQuantizedObserverBase"
        ),
        *_foreign_types(
            "torchao.quantization.pt2e.observer", "ObserverBase", "AffineQuantizedObserverBase"
        ),
    )


def _fake_quant_types() -> tuple[type, ...]:
    return (
        FakeQuantizeBase,
        *_foreign_types("torch.ao.quantization.fake_quantize", "FakeQuantizeBase"),
        *_foreign_types("torchao.quantization.pt2e.fake_quantize", "FakeQuantizeBase"),
    )


def is_observer_or_fake_quant(module: Any) -> bool:
    """True for observers and fake-quants of pt2e_quant, torch.ao.quantization and torchao."""
    return isinstance(module, _observer_types() + _fake_quant_types())


def observer_has_data(module: Any) -> bool:
    """Calibration state of any observer, ours (``has_observed_data``) or duck-typed foreign
    (min_val <= max_val somewhere); True for an observer showing neither."""
    probe = getattr(module, "has_observed_data", None)
    if callable(probe):
        return bool(probe())
    min_val, max_val = getattr(module, "min_val", None), getattr(module, "max_val", None)
    if isinstance(min_val, torch.Tensor) and isinstance(max_val, torch.Tensor):
        if min_val.numel() == 0 or min_val.shape != max_val.shape:
            return False
        return bool((min_val <= max_val).any())
    return True


class FakeQuantizeBase(nn.Module, metaclass=abc.ABCMeta):
    """Root of every pt2e_quant fake-quant.

    The two switches are 1-element uint8 buffers rather than Python bools so that they are
    saved in checkpoints and broadcast by DDP like any other state.
    """

    fake_quant_enabled: torch.Tensor
    observer_enabled: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.uint8))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.uint8))
        self._warned_non_finite = False
        #: name of the graph node this module fake-quantizes, set by prepare for messages
        self.observed_node: str | None = None

    @abc.abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update qparams (if observing) and return the fake-quantized input (if enabled)."""

    @abc.abstractmethod
    def calculate_qparams(self) -> Any:
        """The (scale, zero_point) the current statistics call for."""

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled[0] = 1 if enabled else 0

    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)

    def enable_observer(self, enabled: bool = True) -> None:
        self.observer_enabled[0] = 1 if enabled else 0

    def disable_observer(self) -> None:
        self.enable_observer(False)

    def has_observed_data(self) -> bool:
        """Whether the qparams come from data (delegates to the observer)."""
        observer = getattr(self, "activation_post_process", None)
        return observer_has_data(observer) if observer is not None else True

    def _report_non_finite(self) -> None:
        if not self._warned_non_finite:
            self._warned_non_finite = True
            warnings.warn(
                f"{type(self).__name__}{observing(self)} dropped NaN/Inf values from its "
                "input; they are ignored for calibration (reported once per module).",
                NonFiniteObservationWarning,
                stacklevel=3,
            )

    with_args = classmethod(_bind)
    with_callable_args = classmethod(_bind_callables)


class FakeQuantize(FakeQuantizeBase):
    """Observer-driven fake quantization: ``(clamp(round(x/s + z), qmin, qmax) - z) * s``.

    Every forward with the observer enabled feeds the observer and copies its qparams into the
    ``scale`` / ``zero_point`` buffers; with fake-quant enabled the input is then fake-quantized
    per tensor or per channel. Extra keyword arguments go to the observer constructor; ``None``
    values are dropped so the observer's own defaults (or ``with_args`` bindings) apply.
    ``quant_min`` / ``quant_max`` reach the observer only when both are given, as in torch.ao.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int | None = None,
        quant_max: int | None = None,
        is_dynamic: bool | None = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        observer_kwargs = {k: v for k, v in observer_kwargs.items() if v is not None}
        custom_range = quant_min is not None and quant_max is not None
        if custom_range:
            check_range_fits(owner, None, quant_min, quant_max)  # types and order
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        if is_dynamic is not None:
            observer_kwargs["is_dynamic"] = is_dynamic
        self.activation_post_process = observer(**observer_kwargs)
        post = self.activation_post_process
        if custom_range:
            # Against the dtype the observer really uses (its own default or binding included).
            check_range_fits(owner, post.dtype, quant_min, quant_max)
        self.quant_min = post.quant_min
        self.quant_max = post.quant_max
        self.is_dynamic = post.is_dynamic
        self.dtype = post.dtype
        self.qscheme = post.qscheme
        self.ch_axis = post.ch_axis if hasattr(post, "ch_axis") else -1
        if self.qscheme not in PER_TENSOR_QSCHEMES + PER_CHANNEL_QSCHEMES:
            raise SpecError(
                f"{owner}: the observer's qscheme {self.qscheme} is neither per-tensor nor "
                "per-channel"
            )
        self.is_per_channel = self.qscheme in PER_CHANNEL_QSCHEMES
        float_zero_point = self.qscheme == torch.per_channel_affine_float_qparams
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float))
        self.register_buffer(
            "zero_point", torch.tensor([0], dtype=torch.float if float_zero_point else torch.int)
        )

    def calculate_qparams(self) -> Any:
        """The observer's qparams, freshly computed (``scale`` / ``zero_point`` hold the copy
        the last fake-quantization used)."""
        return self.activation_post_process.calculate_qparams()

    def _refresh_qparams(self) -> None:
        scale, zero_point = self.calculate_qparams()
        scale = scale.to(self.scale.device)
        zero_point = zero_point.to(self.zero_point.device)
        if self.scale.shape != scale.shape:
            self.scale.resize_(scale.shape)
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        qmin = self.activation_post_process.quant_min
        qmax = self.activation_post_process.quant_max
        if self.is_per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, self.scale, self.zero_point, self.ch_axis, qmin, qmax
            )
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, qmin, qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(x.detach())
            self._refresh_qparams()
        if self.fake_quant_enabled[0] == 1:
            x = self._fake_quantize(x)
        return x

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, quant_min={post.quant_min}, "
            f"quant_max={post.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
            f"ch_axis={self.ch_axis}, scale={self.scale}, zero_point={self.zero_point}"
        )

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
        # Per-channel qparams take their length from data, so a fresh module's 1-element
        # buffers must grow to the checkpoint's shape before the values are copied in.
        for name in ("scale", "zero_point"):
            value = state_dict.get(prefix + name)
            buffer = getattr(self, name)
            if isinstance(value, torch.Tensor) and buffer.shape != value.shape:
                buffer.resize_(value.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _fixed_observer_types() -> tuple[type, ...]:
    return (
        FixedQParamsObserver,
        *_foreign_types("torch.ao.quantization.observer", "FixedQParamsObserver"),
        *_foreign_types("torchao.quantization.pt2e.observer", "FixedQParamsObserver"),
    )


class FixedQParamsFakeQuantize(FakeQuantize):
    """Fake quantization with the constant qparams of a FixedQParamsObserver.

    ``scale`` / ``zero_point`` are the observer's own buffers (shared, not copied), so the values
    cannot drift apart, and the observer switch has nothing to update.
    """

    def __init__(self, observer: Any) -> None:
        super().__init__(observer=observer)
        if not isinstance(self.activation_post_process, _fixed_observer_types()):
            raise SpecError(
                f"{type(self).__name__} needs a FixedQParamsObserver, got "
                f"{type(self.activation_post_process).__name__}"
            )
        if self.qscheme not in PER_TENSOR_QSCHEMES:
            raise SpecError(
                f"{type(self).__name__} supports per-tensor qschemes only, got {self.qscheme}"
            )
        self._observer_ctr = observer
        self.scale = self.activation_post_process.scale
        self.zero_point = self.activation_post_process.zero_point

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.scale, self.zero_point

    def has_observed_data(self) -> bool:
        return True

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, scale={self.scale}, "
            f"zero_point={self.zero_point}, dtype={self.dtype}, quant_min={post.quant_min}, "
            f"quant_max={post.quant_max}, qscheme={self.qscheme}"
        )


def _switch(module: Any, method: str) -> None:
    if isinstance(module, _fake_quant_types()):
        getattr(module, method)()


def enable_observer(module: nn.Module) -> None:
    """Let a fake-quant update its qparams again; use as ``model.apply(enable_observer)``."""
    _switch(module, "enable_observer")


def disable_observer(module: nn.Module) -> None:
    """Freeze a fake-quant's qparams (typical late in QAT); use with ``model.apply``."""
    _switch(module, "disable_observer")


def enable_fake_quant(module: nn.Module) -> None:
    """Turn fake quantization back on for a fake-quant; use with ``model.apply``."""
    _switch(module, "enable_fake_quant")


def disable_fake_quant(module: nn.Module) -> None:
    """Pass inputs through unquantized (observers keep running); use with ``model.apply``."""
    _switch(module, "disable_fake_quant")
