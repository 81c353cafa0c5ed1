"""LearnableFakeQuantize: scale and zero point as trainable parameters (LSQ-style QAT).

It starts from the observer's estimate and, once range learning is switched on, lets the
optimizer move scale and zero point through the gradients of ATen's learnable fake-quantize
kernels. The API follows torchao's ``LearnableFakeQuantize``: the parameters are created on the
first forward (their shape is only known from data), ``enable_range_learning`` turns the
observer off, and ``enable_observer`` turns learning off.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import Parameter

from pt2e_quant.errors import SpecError
from pt2e_quant.fake_quantize.base import FakeQuantizeBase
from pt2e_quant.observer.base import _EPS_F32, SYMMETRIC_QSCHEMES, check_range_fits
from pt2e_quant.observer.minmax import MovingAverageMinMaxObserver

__all__ = ["LearnableFakeQuantize", "enable_range_learning", "disable_range_learning"]

_LEARNABLE_PER_CHANNEL = (torch.per_channel_symmetric, torch.per_channel_affine)


class LearnableFakeQuantize(FakeQuantizeBase):
    """Fake quantization whose scale / zero point are ``nn.Parameter``s.

    ``quant_min`` / ``quant_max`` default to 0..255 like torchao's; passing ``None`` for either
    takes the observer's range instead. ``use_grad_scaling`` divides the qparam gradients by
    sqrt(numel * quant_max), the normalisation the LSQ paper recommends. The zero point is a
    float parameter (rounded and clamped when reported by ``calculate_qparams``); symmetric
    qschemes pin it to 0.
    """

    scale: Parameter | None
    zero_point: Parameter | None

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int | None = 0,
        quant_max: int | None = 255,
        use_grad_scaling: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        observer_kwargs = {k: v for k, v in observer_kwargs.items() if v is not None}
        explicit_range = quant_min is not None and quant_max is not None
        if explicit_range:
            if quant_min >= quant_max:
                raise SpecError(
                    f"{owner}: quant_min={quant_min} must be less than quant_max={quant_max}"
                )
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        post = self.activation_post_process
        if explicit_range:
            check_range_fits(owner, post.dtype, quant_min, quant_max)
            self.quant_min, self.quant_max = quant_min, quant_max
        else:
            self.quant_min, self.quant_max = post.quant_min, post.quant_max
        self.use_grad_scaling = use_grad_scaling
        self.scale = None
        self.zero_point = None
        self.dtype = post.dtype
        self.qscheme = post.qscheme
        self.ch_axis = post.ch_axis if hasattr(post, "ch_axis") else -1
        self.register_buffer("learning_enabled", torch.tensor([0], dtype=torch.uint8))
        self.register_buffer("eps", torch.tensor([_EPS_F32]))
        self._initialized = False

    # ------------------------------------------------------------------ switches

    def enable_range_learning(self) -> None:
        """Train scale / zero point from here on; the observer stops updating them."""
        self.learning_enabled[0] = 1
        self.disable_observer()
        self._set_requires_grad(True)

    def disable_range_learning(self) -> None:
        """Freeze scale / zero point (the observer is left as it is)."""
        self.learning_enabled[0] = 0
        self._set_requires_grad(False)

    def enable_observer(self, enabled: bool = True) -> None:
        """Let the observer drive the qparams again, which ends range learning."""
        self.observer_enabled[0] = 1 if enabled else 0
        if enabled:
            self.disable_range_learning()

    def _set_requires_grad(self, flag: bool) -> None:
        for param in (self.scale, self.zero_point):
            if param is not None:
                param.requires_grad = flag

    # ------------------------------------------------------------------ qparams

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale clamped to >= eps, zero point rounded and clamped into the range, as int64)."""
        if self.scale is None or self.zero_point is None:
            raise RuntimeError(
                f"{type(self).__name__} has no qparams before its first forward call"
            )
        self.scale.data.clamp_(min=self.eps.item())
        scale = self.scale.detach()
        zero_point = self.zero_point.detach().round().clamp(self.quant_min, self.quant_max).long()
        return scale, zero_point

    def has_observed_data(self) -> bool:
        return self._initialized

    def adopt_observer_qparams(self) -> None:
        scale, zero_point = self.activation_post_process.calculate_qparams()
        if not self._initialized:
            learning = bool(self.learning_enabled[0] == 1)
            self.scale = Parameter(scale, requires_grad=learning)
            self.zero_point = Parameter(zero_point.float(), requires_grad=learning)
            self._initialized = True
        else:
            self.scale.data.copy_(scale)
            self.zero_point.data.copy_(zero_point.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1 or not self._initialized:
            self.activation_post_process(x.detach())
            self.adopt_observer_qparams()
        if self.fake_quant_enabled[0] != 1:
            return x
        if self.qscheme in SYMMETRIC_QSCHEMES:
            self.zero_point.data.zero_()
        grad_factor = 1.0
        if self.use_grad_scaling:
            grad_factor = 1.0 / (x.numel() * self.quant_max) ** 0.5
        if self.qscheme in _LEARNABLE_PER_CHANNEL:
            return torch._fake_quantize_learnable_per_channel_affine(
                x,
                self.scale,
                self.zero_point,
                self.ch_axis,
                self.quant_min,
                self.quant_max,
                grad_factor,
            )
        return torch._fake_quantize_learnable_per_tensor_affine(
            x, self.scale, self.zero_point, self.quant_min, self.quant_max, grad_factor
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
        # The parameters exist only after a forward; a checkpoint that has them creates them,
        # so a trained module can be restored without running data through it first.
        scale = state_dict.get(prefix + "scale")
        zero_point = state_dict.get(prefix + "zero_point")
        if isinstance(scale, torch.Tensor) and isinstance(zero_point, torch.Tensor):
            learning = bool(self.learning_enabled[0] == 1)
            if self.scale is None or self.scale.shape != scale.shape:
                self.scale = Parameter(torch.empty_like(scale), requires_grad=learning)
            if self.zero_point is None or self.zero_point.shape != zero_point.shape:
                self.zero_point = Parameter(torch.empty_like(zero_point), requires_grad=learning)
            self._initialized = True
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"learning_enabled={self.learning_enabled}, quant_min={self.quant_min}, "
            f"quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
            f"ch_axis={self.ch_axis}, use_grad_scaling={self.use_grad_scaling}, "
            f"scale={self.scale}, zero_point={self.zero_point}"
        )


def enable_range_learning(module: torch.nn.Module) -> None:
    """Switch a LearnableFakeQuantize to learned qparams; use with ``model.apply``."""
    if isinstance(module, LearnableFakeQuantize):
        module.enable_range_learning()


def disable_range_learning(module: torch.nn.Module) -> None:
    """Freeze a LearnableFakeQuantize's qparams; use with ``model.apply``."""
    if isinstance(module, LearnableFakeQuantize):
        module.disable_range_learning()
