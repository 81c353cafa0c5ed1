"""FusedMovingAvgObsFakeQuantize: observe, choose qparams and fake-quantize in one ATen call.

The work is done by ``torch.fused_moving_avg_obs_fake_quant`` (the same kernel torch.ao uses),
which updates the observer's running min/max and this module's scale / zero point in place.
Note that its qparams come from the kernel's own choose-qparams routine, which can differ in
the last bit from the observer's ``calculate_qparams``; torch.ao behaves the same way.

The kernel has no notion of non-finite inputs: a NaN or Inf poisons the running statistics (or
makes the kernel raise). Rather than paying for a finiteness scan on every step, we snapshot
the tiny state tensors, run the kernel, and only if the statistics came out non-finite restore
them and redo the step on the finite values (see :meth:`_observe_finite_part`).
"""

from __future__ import annotations

from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.fake_quantize.base import FakeQuantize, _foreign_types
from pt2e_quant.observer.base import SYMMETRIC_QSCHEMES
from pt2e_quant.observer.minmax import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

__all__ = ["FusedMovingAvgObsFakeQuantize"]


def _moving_average_types() -> tuple[type, ...]:
    names = ("MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver")
    return (
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        *_foreign_types("torch.ao.quantization.observer", *names),
        *_foreign_types("torchao.quantization.pt2e.observer", *names),
    )


class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """FakeQuantize with a moving-average min/max observer, fused into one kernel for speed.

    The switches are int64 buffers here because the kernel reads them as such. The kernel only
    quantizes per channel along axis 0, so other axes (a transposed conv's weight: axis 1) are
    moved to the front and back around it, and 0-dim tensors go through as 1-element vectors;
    the arithmetic is the same. NaN/Inf inputs are ignored for the
    statistics (one warning per module); a batch without finite values leaves them unchanged.
    """

    def __init__(
        self,
        observer: Any = MovingAverageMinMaxObserver,
        quant_min: int | None = 0,
        quant_max: int | None = 255,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__(observer, quant_min, quant_max, **observer_kwargs)
        if not isinstance(self.activation_post_process, _moving_average_types()):
            raise SpecError(
                f"{type(self).__name__} needs a MovingAverageMinMaxObserver or "
                "MovingAveragePerChannelMinMaxObserver, got "
                f"{type(self.activation_post_process).__name__}"
            )
        self.register_buffer("fake_quant_enabled", torch.tensor([1], dtype=torch.long))
        self.register_buffer("observer_enabled", torch.tensor([1], dtype=torch.long))
        self.is_symmetric_quant = self.activation_post_process.qscheme in SYMMETRIC_QSCHEMES

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.activation_post_process.calculate_qparams()

    def _kernel(
        self, x: torch.Tensor, observe: torch.Tensor, fake_quant: torch.Tensor
    ) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # The kernel takes float32 only; convert's quantize op also widens half values to
            # float32 first, so training sees the same rounding the converted model does.
            return self._kernel(x.float(), observe, fake_quant).to(x.dtype)
        if x.dim() == 0:
            # the kernel checks ch_axis < dim even per tensor, so a scalar (e.g. a lifted
            # constant operand) goes through as a 1-element vector
            return self._kernel_along_0(x.reshape(1), observe, fake_quant).reshape(())
        axis = self.ch_axis % x.dim() if self.is_per_channel else 0
        if axis != 0:
            moved = self._kernel_along_0(x.movedim(axis, 0), observe, fake_quant)
            return moved.movedim(0, axis)
        return self._kernel_along_0(x, observe, fake_quant)

    def _kernel_along_0(
        self, x: torch.Tensor, observe: torch.Tensor, fake_quant: torch.Tensor
    ) -> torch.Tensor:
        post = self.activation_post_process
        return torch.fused_moving_avg_obs_fake_quant(
            x,
            observe,
            fake_quant,
            post.min_val,
            post.max_val,
            self.scale,
            self.zero_point,
            post.averaging_constant,
            post.quant_min,
            post.quant_max,
            0,
            self.is_per_channel,
            self.is_symmetric_quant,
        )

    def _state(self) -> list[torch.Tensor]:
        post = self.activation_post_process
        return [post.min_val, post.max_val, self.scale, self.zero_point]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] != 1:
            return self._kernel(x, self.observer_enabled, self.fake_quant_enabled)
        saved = [t.clone() for t in self._state()]
        try:
            out = self._kernel(x, self.observer_enabled, self.fake_quant_enabled)
        except RuntimeError:
            # The kernel rejects qparams computed from NaN statistics; anything else re-raises
            # from the retry below.
            out = None
        post = self.activation_post_process
        if out is not None and bool(
            torch.isfinite(post.min_val).all() & torch.isfinite(post.max_val).all()
        ):
            return out
        for buffer, value in zip(self._state(), saved, strict=True):
            buffer.resize_(value.shape)
            buffer.copy_(value)
        if bool(torch.isfinite(x.detach()).all()):
            # Non-finite statistics from finite data (an overflowing average): not ours to fix.
            return self._kernel(x, self.observer_enabled, self.fake_quant_enabled)
        self._report_non_finite()
        self._observe_finite_part(x.detach())
        return self._kernel(x, torch.zeros_like(self.observer_enabled), self.fake_quant_enabled)

    def _observe_finite_part(self, x: torch.Tensor) -> None:
        """Run the kernel's observation on a stand-in holding just the finite extremes.

        Each channel's stand-in row is [min, max] of its finite values, so the kernel's
        moving-average update and qparams are exactly what the finite values alone would give.
        A channel without finite values gets its running [min, max] instead (which the average
        leaves unchanged) or, if it has none yet, [0, 0], after which it is reset to "unseen";
        the kernel's qparams for [0, 0] equal those it computes for an unseen channel.
        """
        no_output = torch.zeros_like(self.fake_quant_enabled)
        if not self.is_per_channel:
            finite = x[torch.isfinite(x)].float()
            if finite.numel() == 0:
                return
            low, high = torch.aminmax(finite)
            self._kernel(torch.stack([low, high]), self.observer_enabled, no_output)
            return
        rows = x.movedim(self.ch_axis, 0).reshape(x.shape[self.ch_axis], -1).float()
        finite = torch.isfinite(rows)
        seen = finite.any(dim=1)
        if not bool(seen.any()):
            return
        inf = torch.tensor(float("inf"), device=rows.device)
        low = torch.where(finite, rows, inf).amin(dim=1)
        high = torch.where(finite, rows, -inf).amax(dim=1)
        post = self.activation_post_process
        channels = rows.shape[0]
        if post.min_val.numel() == channels:
            running_min, running_max = post.min_val, post.max_val
        else:
            running_min = torch.full((channels,), float("inf"), device=rows.device)
            running_max = -running_min
        started = torch.isfinite(running_min) & torch.isfinite(running_max)
        zero = torch.zeros_like(low)
        low = torch.where(seen, low, torch.where(started, running_min, zero))
        high = torch.where(seen, high, torch.where(started, running_max, zero))
        never = ~seen & ~started
        self._kernel(torch.stack([low, high], dim=1), self.observer_enabled, no_output)
        post.min_val.masked_fill_(never, float("inf"))
        post.max_val.masked_fill_(never, float("-inf"))

    def extra_repr(self) -> str:
        post = self.activation_post_process
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, scale={self.scale}, "
            f"zero_point={self.zero_point}, dtype={self.dtype}, quant_min={post.quant_min}, "
            f"quant_max={post.quant_max}, qscheme={self.qscheme}, "
            f"reduce_range={post.reduce_range}"
        )
