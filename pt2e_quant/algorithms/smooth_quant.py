"""SmoothQuant: move each input channel's outliers from the activation into the weights.

Static int8 activations lose most of their resolution when a few channels are 30-100x larger
than the rest (transformers after a layer norm): one scale must cover the outliers. For an op
contracting channel ``j`` of ``X`` against weight entries ``W[:, j]``, dividing ``X_j`` and
multiplying ``W[:, j]`` by the same ``s_j`` leaves the product unchanged and flattens the
activation's channels; the weights, quantized per output channel, absorb the range instead::

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)        X' = X / s,   W' = W * s

``max|X_j|`` is measured over the calibration batches, ``max|W_j|`` over every op reading the
same activation (q/k/v share one ``s``). ``alpha`` is the share of the range moved: 0 leaves
activations alone and normalises the weights' channels, 1 normalises the activations' channels
(every ``max|X'_j|`` becomes 1).

Worked example (alpha 0.5): channel maxima ``X: [1, 50]``, ``W: [0.5, 0.5]`` give
``s = [1/0.5**0.5, 50**0.5/0.5**0.5] = [1.41, 10]``; with power-of-two rounding
``s = [1, 8]``: the activation's channel ranges become ``[1, 6.25]`` instead of ``[1, 50]``.

Exactness: by default each ``s_j`` is rounded to the nearest power of two, so ``X/s`` and
``W*s`` are exact in floating point and the smoothed model computes bit for bit what the float
model did (barring subnormals). ``power_of_two=False`` uses the formula as is (equal up to
rounding, about 1e-7 relative in float32).

Degenerate channels get ``s = 1``: an activation or weight maximum of 0, a NaN or inf seen in
the data or the weights (with a warning naming the activation), and any channel whose scaled
values would overflow the tensors' dtype. ``s`` is clamped to ``[2**-16, 2**16]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch.fx import GraphModule

from pt2e_quant.algorithms.channel_statistics import channel_abs_max
from pt2e_quant.algorithms.smoothing_rewrite import (
    fold_into_norm,
    fold_into_producing_linear,
    insert_scaling_multiply,
    scale_consumer_weights,
)
from pt2e_quant.algorithms.smoothing_targets import SmoothingGroup, find_smoothing_groups
from pt2e_quant.errors import ModelNotExportedError, SpecError, warn_user
from pt2e_quant.graph.aten_args import module_constant
from pt2e_quant.pipeline.calibration import check_max_batches

__all__ = [
    "MAX_SMOOTHING_SCALE",
    "MIN_SMOOTHING_SCALE",
    "SmoothQuantResult",
    "check_alpha",
    "SmoothedActivation",
    "smooth_quant",
    "smoothing_scale",
]

#: the range ``s`` is clamped to (powers of two, so rounding keeps them)
MIN_SMOOTHING_SCALE = 2.0**-16
MAX_SMOOTHING_SCALE = 2.0**16


@dataclass(frozen=True)
class SmoothedActivation:
    """One smoothed activation: its node name, the ops reading it (their weights now ``W*s``),
    ``s`` (float32, one per channel), and where ``1/s`` went: the kept-float ``multiply``
    inserted in front of the consumers, or the norm it was ``folded_into``."""

    activation: str
    consumers: tuple[str, ...]
    scale: torch.Tensor
    multiply: str | None = None
    folded_into: str | None = None


@dataclass(frozen=True)
class SmoothQuantResult:
    """What :func:`smooth_quant` did: the smoothed activations, the candidates it left alone
    (activation node name -> why), and how many batches the statistics saw."""

    alpha: float
    batches: int
    smoothed: tuple[SmoothedActivation, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.smoothed)

    @property
    def kept_float(self) -> dict[str, str]:
        """Inserted multiply name -> the reason ``explain()`` reports for it."""
        return {s.multiply: _reason(s.consumers) for s in self.smoothed if s.multiply}


def _reason(consumers: Iterable[str]) -> str:
    return f"kept float: SmoothQuant's per-channel scaling of {', '.join(consumers)}"


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float, or a SpecError naming it (also run by quantize() before exporting)."""
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, Real)
        or not math.isfinite(float(alpha))
        or not 0.0 <= float(alpha) <= 1.0
    ):
        raise SpecError(
            f"smooth_quant: alpha must be a number in [0, 1], got {alpha!r}; alpha is the share "
            "of each channel's range moved from the activation into the weights (0: none, 1: "
            "all; 0.5 is the usual choice for transformers)"
        )
    return float(alpha)


def smoothing_scale(
    activation_max: torch.Tensor,
    weight_max: torch.Tensor,
    alpha: float,
    *,
    power_of_two: bool = True,
    limit: float = math.inf,
) -> torch.Tensor:
    """``s`` per channel (float32) from the channels' absolute maxima, with the degenerate
    rules of the module docstring; ``limit`` is the largest value the scaled tensors may hold
    (their dtype's ``finfo.max``)."""
    act = activation_max.double()
    wgt = weight_max.double()
    usable = act.isfinite() & wgt.isfinite() & (act > 0) & (wgt > 0)
    act = torch.where(usable, act, 1.0)
    wgt = torch.where(usable, wgt, 1.0)
    scale = (act.pow(alpha) / wgt.pow(1.0 - alpha)).clamp(MIN_SMOOTHING_SCALE, MAX_SMOOTHING_SCALE)
    if power_of_two:
        scale = torch.exp2(torch.round(torch.log2(scale)))
    fits = (act / scale <= limit) & (wgt * scale <= limit)
    return torch.where(usable & fits, scale, 1.0).float()


def _weight_channel_max(gm: GraphModule, group: SmoothingGroup) -> torch.Tensor:
    """``max |W_j|`` over every consumer's weight, per activation channel (float32)."""
    largest = None
    for consumer in group.consumers:
        weight = module_constant(gm, consumer.weight)
        assert weight is not None
        dims = tuple(d for d in range(weight.dim()) if d != consumer.input_axis)
        channel_max = weight.detach().abs().amax(dim=dims) if dims else weight.detach().abs()
        channel_max = channel_max.float()
        largest = channel_max if largest is None else torch.maximum(largest, channel_max)
    assert largest is not None
    return largest


def _dtype_limit(gm: GraphModule, group: SmoothingGroup) -> float:
    dtypes = [group.activation.meta["val"].dtype]
    dtypes += [module_constant(gm, c.weight).dtype for c in group.consumers]  # type: ignore[union-attr]
    return min(torch.finfo(dtype).max for dtype in dtypes)


def _warn_non_finite(group: SmoothingGroup, what: str, values: torch.Tensor) -> None:
    bad = int((~values.isfinite()).sum())
    if bad:
        readers = ", ".join(c.node.name for c in group.consumers)
        warn_user(
            f"SmoothQuant: {bad} of {values.numel()} channels of '{group.activation.name}' "
            f"(read by {readers}) have NaN or inf {what}; those channels are left unscaled "
            "(s = 1). Check the calibration data and the weights for NaN or inf.",
            RuntimeWarning,
        )


def smooth_quant(
    gm: GraphModule,
    batches: Iterable[Any],
    alpha: float = 0.5,
    *,
    max_batches: int | None = None,
    fold: bool = True,
    power_of_two: bool = True,
) -> SmoothQuantResult:
    """Smooth every linear / matmul input of the exported float model ``gm``, in place.

    ``gm`` is ``torch.export.export(model, example_inputs).module()``, not yet prepared.
    ``batches`` are calibration inputs (tuples of positional inputs, or lone tensors), run
    once each (at most ``max_batches``) to measure per-channel activation maxima; pass the
    same data calibration uses (a list, not a one-shot iterator, to calibrate with it again).

    Then prepare with :class:`~pt2e_quant.algorithms.overrides.OverridingQuantizer` around
    the backend's quantizer: each inserted ``x * (1/s)`` is marked kept float (quantizing its
    input would quantize the outliers before smoothing), and the consumer's own input
    annotation then observes the smoothed activation. With ``fold`` (default), ``1/s`` is
    folded into a layer / RMS norm producing the activation when the group alone reads it,
    and no multiply is inserted there.

    The float model's outputs do not change: bit for bit with ``power_of_two`` (default),
    up to float rounding without it. The user's tensors are never written: scaled weights
    are new tensors. Raises ``SpecError`` (a ``ValueError``) naming ``alpha`` unless
    ``0 <= alpha <= 1``, and ``CalibrationError`` (a ``ValueError``) when ``batches`` is
    empty. Only the top-level graph is smoothed (not ``cond`` / ``scan`` bodies).
    """
    alpha = check_alpha(alpha)
    check_max_batches(max_batches)
    if not isinstance(gm, GraphModule):
        raise ModelNotExportedError(
            f"smooth_quant takes the GraphModule of torch.export.export(model, example_inputs)"
            f".module(), got {type(gm).__name__}"
        )
    groups = find_smoothing_groups(gm)
    if not groups:
        return SmoothQuantResult(alpha, 0)
    maxima, count = channel_abs_max(
        gm, [g.activation for g in groups], batches, max_batches=max_batches
    )
    smoothed: list[SmoothedActivation] = []
    skipped: dict[str, str] = {}
    for group in groups:
        name = group.activation.name
        act_max = maxima.get(group.activation)
        if act_max is None:
            skipped[name] = "never reached by the calibration data (empty in every batch)"
            continue
        weight_max = _weight_channel_max(gm, group)
        _warn_non_finite(group, "values in the calibration data", act_max)
        _warn_non_finite(group, "weights", weight_max)
        scale = smoothing_scale(
            act_max, weight_max, alpha, power_of_two=power_of_two, limit=_dtype_limit(gm, group)
        )
        if bool((scale == 1).all()):
            skipped[name] = "every channel's scale is 1"
            continue
        smoothed.append(_rewrite(gm, group, scale, fold))
    if smoothed:
        gm.graph.lint()
        gm.recompile()
    return SmoothQuantResult(alpha, count, tuple(smoothed), skipped)


def _rewrite(
    gm: GraphModule, group: SmoothingGroup, scale: torch.Tensor, fold: bool
) -> SmoothedActivation:
    consumers = tuple(c.node.name for c in group.consumers)
    inverse = 1.0 / scale
    activation = group.activation.name
    if fold:
        producer = fold_into_norm(gm, group, inverse) or fold_into_producing_linear(
            gm, group, inverse
        )
        if producer is not None:
            scale_consumer_weights(gm, group.consumers, scale)
            return SmoothedActivation(activation, consumers, scale, folded_into=producer.name)
    multiply = insert_scaling_multiply(gm, group, inverse, _reason(consumers))
    scale_consumer_weights(gm, group.consumers, scale)
    return SmoothedActivation(activation, consumers, scale, multiply=multiply.name)
