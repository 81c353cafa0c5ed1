"""Observers for the LLM granularities: per-group weights and per-token dynamic activations.

LLM schemes do not fit torch's qschemes. Weights get one (scale, zero point) per group of
``group_size`` consecutive input columns of each output row ("int4 with groups of 32"), and
activations are quantized dynamically with one (scale, zero point) per token, i.e. per row of
the last dimension. convert turns these observers into the ``quantized_decomposed`` ops
XNNPACK's partitioner and Inductor match: ``quantize/dequantize_per_channel_group`` on the
weight (the quantize folded into an int8 constant) and ``choose_qparams_per_token_asymmetric ->
quantize_per_token -> dequantize_per_token`` on the activation.

A group's qparams are a channel's qparams over that group's values, so
:class:`PerGroupMinMaxObserver` is the per-channel min/max observer looking at the weight as
``(rows, groups, group_size)``: the same arithmetic, hence the same scales as torchao's
min/max symmetric per-group configuration (``amax / 7.5`` for int4).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from pt2e_quant.errors import SpecError
from pt2e_quant.observer.base import _EPS_F32
from pt2e_quant.observer.minmax import PerChannelMinMaxObserver
from pt2e_quant.observer.passthrough import PlaceholderObserver

__all__ = [
    "PerGroupMinMaxObserver",
    "PerTokenDynamicObserver",
    "granular_observer",
    "valid_group_sizes",
]


#: groups whose qparams are computed together (64 KiB of float32 statistics)
_QPARAM_BLOCK = 1 << 14


def valid_group_sizes(columns: int) -> list[int]:
    """The group sizes a weight with ``columns`` input columns accepts (divisors above 1)."""
    return [size for size in range(2, columns + 1) if columns % size == 0]


class PerGroupMinMaxObserver(PerChannelMinMaxObserver):
    """Min/max per group of ``group_size`` input columns of each output row of a 2-D weight.

    Statistics are kept as ``(rows, columns // group_size)``, the shape of the scales
    ``dequantize_per_channel_group`` takes. A weight whose column count ``group_size`` does
    not divide is refused with the sizes that would work. ``ch_axis`` must be the rows (0):
    groups run along the input features, which is what per-group kernels expect.
    """

    def __init__(
        self,
        group_size: int = 32,
        ch_axis: int | None = 0,
        dtype: torch.dtype | None = torch.int8,
        qscheme: torch.qscheme | None = torch.per_channel_symmetric,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float | None = _EPS_F32,
        is_dynamic: bool | None = False,
    ) -> None:
        owner = type(self).__name__
        if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral):
            raise SpecError(f"{owner}: group_size must be an int, got {group_size!r}")
        if group_size < 2:
            raise SpecError(f"{owner}: group_size={group_size} must be at least 2")
        if ch_axis not in (None, 0, -2):
            raise SpecError(
                f"{owner}: ch_axis={ch_axis}: groups run along the input columns of each "
                "output row, so ch_axis must be 0 (the rows of a (out, in) weight)"
            )
        super().__init__(
            ch_axis=0,
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
        )
        self.group_size = int(group_size)

    def _rows(self, x_orig: torch.Tensor) -> torch.Tensor:
        x = x_orig.detach()
        owner = type(self).__name__
        if x.dim() != 2:
            raise SpecError(
                f"{owner}: per-group quantization takes a 2-D (out_features, in_features) "
                f"weight, got shape {tuple(x.shape)}"
            )
        columns = x.shape[1]
        if columns % self.group_size:
            raise SpecError(
                f"{owner}: group_size={self.group_size} does not divide the weight's "
                f"{columns} input columns (shape {tuple(x.shape)}); valid group sizes: "
                f"{valid_group_sizes(columns)}"
            )
        return x.to(self.min_val.dtype).reshape(-1, self.group_size)

    def _batch_extremes(
        self, x_orig: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        extremes = super()._batch_extremes(x_orig)
        if extremes is None:
            return None
        grid = (x_orig.shape[0], x_orig.shape[1] // self.group_size)
        low, high, seen = extremes
        return low.reshape(grid), high.reshape(grid), None if seen is None else seen.reshape(grid)

    def _qparams_by_row_blocks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel arithmetic a block of rows at a time (it is elementwise, so the
        result is the same): an lm_head has millions of groups, and the dozen group-sized
        temporaries the arithmetic makes would otherwise stay resident as heap holes (320 MB
        on a 2-layer Llama's convert)."""
        low, high = self.min_val, self.max_val
        if low.dim() != 2 or low.numel() <= _QPARAM_BLOCK or low.shape != high.shape:
            return super().calculate_qparams()
        step = max(1, _QPARAM_BLOCK // low.shape[1])
        blocks = [
            self._calculate_qparams(low[start : start + step], high[start : start + step])
            for start in range(0, low.shape[0], step)
        ]
        return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group (scale, zero_point) of shape (rows, groups).

        Symmetric signed groups have zero points that are all 0: they are stored as int8, as
        torchao's int4 weights store them (a 1B-parameter model's group zero points take 39 MB
        instead of 309 MB in int64). Other schemes keep the wider dtype: the group dequantize subtracts
        the zero point in the weight's integer dtype, where int8 could overflow.
        """
        scale, zero_point = self._qparams_by_row_blocks()
        if self.qscheme == torch.per_channel_symmetric and self.quant_min < 0:
            zero_point = zero_point.to(torch.int8)
        return scale, zero_point

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, " + super().extra_repr()


class PerTokenDynamicObserver(PlaceholderObserver):
    """Marks an activation for dynamic quantization with one (scale, zero point) per token.

    Nothing is observed: convert emits ``choose_qparams_per_token_asymmetric`` (``qscheme=
    torch.per_tensor_affine``, the default: XNNPACK's) or ``choose_qparams_per_token``
    (``torch.per_tensor_symmetric``: zero points 0, scale ``amax / 127``, what Inductor's
    ``_int_mm`` kernel pattern takes). The qscheme names how each token is quantized. Both
    choose ops quantize to int8 -128..127, so that is the only range accepted.
    """

    def __init__(
        self,
        dtype: torch.dtype | None = torch.int8,
        quant_min: int | None = -128,
        quant_max: int | None = 127,
        qscheme: torch.qscheme | None = torch.per_tensor_affine,
        eps: float | None = None,
        is_dynamic: bool | None = True,
    ) -> None:
        owner = type(self).__name__
        dtype = torch.int8 if dtype is None else dtype
        quant_min = -128 if quant_min is None else quant_min
        quant_max = 127 if quant_max is None else quant_max
        qscheme = torch.per_tensor_affine if qscheme is None else qscheme
        if (dtype, quant_min, quant_max) != (torch.int8, -128, 127):
            raise SpecError(
                f"{owner}: per-token dynamic quantization is int8 -128..127 "
                f"(choose_qparams_per_token(_asymmetric)'s range), got {dtype} "
                f"{quant_min}..{quant_max}"
            )
        if qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise SpecError(
                f"{owner}: qscheme={qscheme} is not a per-token scheme; use "
                "torch.per_tensor_affine (asymmetric tokens) or torch.per_tensor_symmetric"
            )
        if is_dynamic is False:
            raise SpecError(f"{owner}: per-token quantization is dynamic; use is_dynamic=True")
        super().__init__(
            dtype=dtype,
            quant_min=quant_min,
            quant_max=quant_max,
            qscheme=qscheme,
            eps=eps,
            is_dynamic=True,
        )


def granular_observer(module: Any) -> PerGroupMinMaxObserver | PerTokenDynamicObserver | None:
    """The per-group or per-token observer ``module`` is, or wraps (a QAT fake-quant's
    ``activation_post_process``): what convert, coverage and the prepare checks act on."""
    for candidate in (module, getattr(module, "activation_post_process", None)):
        if isinstance(candidate, (PerGroupMinMaxObserver, PerTokenDynamicObserver)):
            return candidate
    return None
