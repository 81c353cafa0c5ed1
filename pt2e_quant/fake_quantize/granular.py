"""QAT at the LLM granularities: weights fake-quantized per group, activations per token.

Two modules, each simulating in training exactly what convert will emit:

* :class:`WeightFakeQuantize` takes its qparams from the weight's *current* value at every
  step (its observer is reset first), as torchao's QAT weight fake-quantizers do: a weight
  moves during training, and a running min/max would keep ranges it has left. With a
  :class:`~pt2e_quant.observer.PerGroupMinMaxObserver` it fake-quantizes one group of input
  columns at a time (convert: ``quantize/dequantize_per_channel_group``); with a per-channel
  observer, one output channel at a time (convert: ``quantize/dequantize_per_channel``).
* :class:`PerTokenFakeQuantize` quantizes each token (row of the last dimension) with the
  qparams ``choose_qparams_per_token_asymmetric`` (or, for a symmetric qscheme,
  ``choose_qparams_per_token``) picks for it, by running the very ops convert emits
  (``quantize_per_token`` / ``dequantize_per_token``), so the trained model and the converted
  one compute the same activations bit for bit. The per-token range always covers the token,
  nothing is clipped, so the straight-through gradient is the identity.
"""

from __future__ import annotations

from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.fake_quantize.base import FakeQuantize
from pt2e_quant.observer.granular import PerGroupMinMaxObserver, PerTokenDynamicObserver
from pt2e_quant.observer.minmax import PerChannelMinMaxObserver
from pt2e_quant.ops import qdq_ops

__all__ = ["PerTokenFakeQuantize", "WeightFakeQuantize"]


class WeightFakeQuantize(FakeQuantize):
    """Fake quantization with qparams from the weight's current value, per channel or group.

    ``observer`` must be a per-channel min/max observer (:class:`PerGroupMinMaxObserver` for
    groups); its statistics are reset before each observed step, so the qparams are always
    those of the weight being trained, and convert folds the final weight with the same ones.
    """

    def __init__(
        self,
        observer: Any = PerGroupMinMaxObserver,
        quant_min: int | None = None,
        quant_max: int | None = None,
        is_dynamic: bool | None = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__(observer, quant_min, quant_max, is_dynamic, **observer_kwargs)
        if not isinstance(self.activation_post_process, PerChannelMinMaxObserver):
            raise SpecError(
                f"{type(self).__name__} needs a per-channel or per-group min/max observer, "
                f"got {type(self.activation_post_process).__name__}"
            )

    @property
    def group_size(self) -> int | None:
        """The observer's group size; None when it quantizes whole channels."""
        return getattr(self.activation_post_process, "group_size", None)

    def _fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        size = self.group_size
        if size is None:
            return super()._fake_quantize(x)
        # each group is a "channel" of the weight seen as (rows * groups, group_size)
        post = self.activation_post_process
        grouped = torch.fake_quantize_per_channel_affine(
            x.reshape(-1, size),
            self.scale.reshape(-1),
            self.zero_point.reshape(-1),
            0,
            post.quant_min,
            post.quant_max,
        )
        return grouped.reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process.reset_min_max_vals()
        return super().forward(x)

    def extra_repr(self) -> str:
        size = self.group_size
        return ("" if size is None else f"group_size={size}, ") + super().extra_repr()


class _PassGradient(torch.autograd.Function):
    """Returns the fake-quantized value, hands the gradient to the unquantized input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class PerTokenFakeQuantize(FakeQuantize):
    """Dynamic int8 fake quantization with one (scale, zero point) per token, chosen from the
    token itself at every call (training and evaluation alike, as at inference)."""

    def __init__(self, observer: Any = PerTokenDynamicObserver, **observer_kwargs: Any) -> None:
        observer_kwargs["is_dynamic"] = True
        super().__init__(observer, **observer_kwargs)
        if not isinstance(self.activation_post_process, PerTokenDynamicObserver):
            raise SpecError(
                f"{type(self).__name__} needs a PerTokenDynamicObserver, got "
                f"{type(self.activation_post_process).__name__}"
            )

    def has_observed_data(self) -> bool:
        return True  # nothing to observe: qparams come from each input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fake_quant_enabled[0] != 1 or x.numel() == 0:
            return x
        post = self.activation_post_process
        plain = qdq_ops.to_plain_dtype(post.dtype)
        with torch.no_grad():
            value = x.detach()
            choose = qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_FOR_QSCHEME[post.qscheme]
            scale, zero_point = choose(value, plain)
            qparams = (scale, zero_point, post.quant_min, post.quant_max, plain)
            quantized = qdq_ops.QUANTIZE_PER_TOKEN(value, *qparams)
            simulated = qdq_ops.DEQUANTIZE_PER_TOKEN(quantized, *qparams, x.dtype)
        return _PassGradient.apply(x, simulated)
