"""Quantization specs: how one tensor (an edge into a node, or a node's output) is quantized.

A backend ``Quantizer`` describes its decisions with these values and stores them in
:class:`~pt2e_quant.contract.annotation.QuantizationAnnotation` objects on the graph. They are frozen
dataclasses with value equality, because prepare decides implicit sharing by comparing specs:
two equal specs on the two ends of one tensor mean one observer suffices. They validate
themselves on construction so a wrong field fails where it was written, naming the field,
instead of deep inside prepare.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.errors import SpecError

__all__ = [
    "EdgeOrNode",
    "QuantizationSpecBase",
    "QuantizationSpec",
    "FixedQParamsQuantizationSpec",
    "SharedQuantizationSpec",
    "DerivedQuantizationSpec",
]

#: An input edge ``(producer, consumer)`` or a node (meaning the node's output).
EdgeOrNode = tuple[Node, Node] | Node

_PER_TENSOR_QSCHEMES = frozenset({torch.per_tensor_affine, torch.per_tensor_symmetric})
_PER_CHANNEL_QSCHEMES = frozenset(
    {
        torch.per_channel_affine,
        torch.per_channel_symmetric,
        torch.per_channel_affine_float_qparams,
    }
)
_QSCHEMES = _PER_TENSOR_QSCHEMES | _PER_CHANNEL_QSCHEMES

_QUANTIZED_TO_PLAIN = {
    torch.quint8: torch.uint8,
    torch.qint8: torch.int8,
    torch.qint32: torch.int32,
}


def is_per_channel(qscheme: torch.qscheme | None) -> bool:
    """True for the per-channel qschemes (scale / zero point vary along ``ch_axis``)."""
    return qscheme in _PER_CHANNEL_QSCHEMES


def _integer_range(dtype: torch.dtype) -> tuple[int, int] | None:
    plain = _QUANTIZED_TO_PLAIN.get(dtype, dtype)
    if plain.is_floating_point or plain.is_complex or plain == torch.bool:
        return None
    info = torch.iinfo(plain)
    return info.min, info.max


def _check_dtype(owner: str, dtype: Any) -> None:
    if not isinstance(dtype, torch.dtype):
        raise SpecError(f"{owner}.dtype must be a torch.dtype, got {dtype!r}")


def _check_range(owner: str, dtype: torch.dtype, quant_min: Any, quant_max: Any) -> None:
    """quant_min/max must be ints, ordered, and representable in ``dtype``."""
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpecError(f"{owner}.{name} must be an int or None, got {value!r}")
    if quant_min is not None and quant_max is not None and quant_min > quant_max:
        raise SpecError(
            f"{owner}.quant_min ({quant_min}) is greater than quant_max ({quant_max}); "
            "swap them or fix the range"
        )
    bounds = _integer_range(dtype)
    if bounds is None:
        return
    lo, hi = bounds
    if quant_min is not None and not lo <= quant_min <= hi:
        raise SpecError(
            f"{owner}.quant_min={quant_min} does not fit dtype {dtype} (range {lo}..{hi})"
        )
    if quant_max is not None and not lo <= quant_max <= hi:
        raise SpecError(
            f"{owner}.quant_max={quant_max} does not fit dtype {dtype} (range {lo}..{hi})"
        )


def _check_qscheme(owner: str, qscheme: Any, ch_axis: Any) -> None:
    if qscheme is not None and qscheme not in _QSCHEMES:
        raise SpecError(f"{owner}.qscheme must be a torch.qscheme, got {qscheme!r}")
    if ch_axis is not None:
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, int):
            raise SpecError(f"{owner}.ch_axis must be an int or None, got {ch_axis!r}")
        if ch_axis < 0:
            raise SpecError(
                f"{owner}.ch_axis={ch_axis} is negative; give the non-negative axis "
                "(e.g. 0 for conv/linear weights, 1 for transposed-conv weights)"
            )


def _check_edge_or_node(owner: str, field_name: str, value: Any) -> None:
    if isinstance(value, Node):
        return
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], Node)
        and isinstance(value[1], Node)
    ):
        return
    raise SpecError(
        f"{owner}.{field_name} must be a Node or a (producer Node, consumer Node) edge, "
        f"got {value!r}"
    )


class QuantizationSpecBase(ABC):  # noqa: B024 - a marker base, like torchao's
    """Common base so code can ask ``isinstance(x, QuantizationSpecBase)``."""


@dataclass(eq=True, frozen=True)
class QuantizationSpec(QuantizationSpecBase):
    """Quantize with an observer (PTQ) or fake-quant (QAT) built from ``observer_or_fake_quant_ctr``.

    Every field except the ctor is passed to the ctor as a keyword override when prepare builds
    the module (``ch_axis`` only for per-channel classes), so a generic ``default_observer``
    becomes, say, a uint8 0..255 observer here.
    """

    dtype: torch.dtype
    observer_or_fake_quant_ctr: Callable[..., Any]
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        _check_dtype("QuantizationSpec", self.dtype)
        if not callable(self.observer_or_fake_quant_ctr):
            raise SpecError(
                "QuantizationSpec.observer_or_fake_quant_ctr must be callable (an observer class "
                f"or a .with_args(...) partial), got {self.observer_or_fake_quant_ctr!r}"
            )
        _check_range("QuantizationSpec", self.dtype, self.quant_min, self.quant_max)
        _check_qscheme("QuantizationSpec", self.qscheme, self.ch_axis)


@dataclass(eq=True, frozen=True)
class FixedQParamsQuantizationSpec(QuantizationSpecBase):
    """Quantize with known qparams (e.g. sigmoid's output in [0, 1] uses scale 1/256)."""

    dtype: torch.dtype
    scale: float
    zero_point: int
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    is_dynamic: bool = False

    def __post_init__(self) -> None:
        owner = "FixedQParamsQuantizationSpec"
        _check_dtype(owner, self.dtype)
        _check_range(owner, self.dtype, self.quant_min, self.quant_max)
        _check_qscheme(owner, self.qscheme, None)
        if not isinstance(self.scale, (int, float)) or not (
            math.isfinite(self.scale) and self.scale > 0
        ):
            raise SpecError(f"{owner}.scale must be a finite positive float, got {self.scale!r}")
        if isinstance(self.zero_point, bool) or not isinstance(self.zero_point, int):
            raise SpecError(f"{owner}.zero_point must be an int, got {self.zero_point!r}")
        lo = self.quant_min if self.quant_min is not None else -math.inf
        hi = self.quant_max if self.quant_max is not None else math.inf
        if not lo <= self.zero_point <= hi:
            raise SpecError(
                f"{owner}.zero_point={self.zero_point} lies outside "
                f"quant_min..quant_max ({self.quant_min}..{self.quant_max})"
            )


@dataclass(eq=True, frozen=True)
class SharedQuantizationSpec(QuantizationSpecBase):
    """Use the same observer (hence the same qparams) as another edge or node.

    Typical use: cat's inputs and output, or max_pool2d's output sharing its input's qparams, so
    the backend can run the op directly on integers.
    """

    edge_or_node: EdgeOrNode

    def __post_init__(self) -> None:
        _check_edge_or_node("SharedQuantizationSpec", "edge_or_node", self.edge_or_node)


@dataclass(eq=True, frozen=True)
class DerivedQuantizationSpec(QuantizationSpecBase):
    """Qparams computed from other observers, e.g. bias scale = input scale * weight scale.

    ``derive_qparams_fn`` receives the observers of ``derived_from``, in that order, and returns
    ``(scale, zero_point)``.
    """

    derived_from: list[EdgeOrNode]
    derive_qparams_fn: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]]
    dtype: torch.dtype
    quant_min: int | None = None
    quant_max: int | None = None
    qscheme: torch.qscheme | None = None
    ch_axis: int | None = None
    is_dynamic: bool = False
    # frozen + a list field: hash by identity, equality by value
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __post_init__(self) -> None:
        owner = "DerivedQuantizationSpec"
        if not isinstance(self.derived_from, (list, tuple)) or len(self.derived_from) == 0:
            raise SpecError(
                f"{owner}.derived_from must list at least one edge or node to derive from, "
                f"got {self.derived_from!r}"
            )
        for item in self.derived_from:
            _check_edge_or_node(owner, "derived_from", item)
        if not callable(self.derive_qparams_fn):
            raise SpecError(f"{owner}.derive_qparams_fn must be callable")
        _check_dtype(owner, self.dtype)
        _check_range(owner, self.dtype, self.quant_min, self.quant_max)
        _check_qscheme(owner, self.qscheme, self.ch_axis)


def spec_fields(spec: QuantizationSpecBase) -> dict[str, Any]:
    """The fields of a spec as a dict, without deep-copying node references."""
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}  # type: ignore[attr-defined]
