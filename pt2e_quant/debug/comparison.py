"""Comparing what a float and a quantized model computed, handle by handle.

The metrics take ``(ref, actual)`` tensors (float model first), compute in float32 so integer
or half outputs compare too, and return a 0-d float tensor. Degenerate data is defined rather
than left to 0/0:

==========================  =========  ===========  ===============
case                        SQNR (dB)  normalized   cosine
                                       L2
==========================  =========  ===========  ===============
identical (even all zero)   +inf       0            1 (0 if all 0)
ref all zero, actual not    -inf       +inf         0
any NaN                     NaN        NaN          NaN
==========================  =========  ===========  ===============

Outputs that are lists / tuples / dicts (``split``, multi-output ops) are compared leaf by leaf
and the result keeps the structure (a list for lists and tuples, a dict for dicts); leaves that
are not tensors (ints, None) give None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.fx import Node

from pt2e_quant.debug.loggers import LoggerResults
from pt2e_quant.graph.node_meta import STRICT_SELF_PREFIX

__all__ = [
    "compute_sqnr",
    "compute_mse",
    "compute_normalized_l2",
    "compute_cosine_similarity",
    "QuantizationComparisonResult",
    "NodeAccuracySummary",
    "compare_results",
    "module_path",
    "op_name",
]

Metric = Callable[[Tensor, Tensor], Tensor]


def _as_float(ref: Tensor, actual: Tensor) -> tuple[Tensor, Tensor]:
    return ref.detach().to(torch.float32), actual.detach().to(torch.float32)


def compute_sqnr(ref: Tensor, actual: Tensor) -> Tensor:
    """Signal-to-quantization-noise ratio, ``20·log10(‖ref‖ / ‖ref − actual‖)`` in dB."""
    ref, actual = _as_float(ref, actual)
    noise = torch.linalg.vector_norm(ref - actual)
    if noise == 0:
        return torch.tensor(math.inf)
    return 20 * torch.log10(torch.linalg.vector_norm(ref) / noise)


def compute_mse(ref: Tensor, actual: Tensor) -> Tensor:
    """Mean squared error."""
    ref, actual = _as_float(ref, actual)
    return F.mse_loss(actual, ref)


def compute_normalized_l2(ref: Tensor, actual: Tensor) -> Tensor:
    """``‖ref − actual‖ / ‖ref‖``: the error relative to the signal, 0 when identical."""
    ref, actual = _as_float(ref, actual)
    error = torch.linalg.vector_norm(ref - actual)
    if error == 0:
        return torch.tensor(0.0)
    return error / torch.linalg.vector_norm(ref)


def compute_cosine_similarity(ref: Tensor, actual: Tensor) -> Tensor:
    """Cosine of the angle between the flattened tensors (0 against an all-zero tensor)."""
    ref, actual = _as_float(ref, actual)
    return F.cosine_similarity(ref.reshape(1, -1), actual.reshape(1, -1)).squeeze(0)


def _same_structure(ref: object, actual: object) -> bool:
    """Same nesting and, leaf by leaf, same tensor shapes."""
    if isinstance(ref, Tensor) and isinstance(actual, Tensor):
        return ref.shape == actual.shape
    if isinstance(ref, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(ref) == len(actual) and all(map(_same_structure, ref, actual))
    if isinstance(ref, dict) and isinstance(actual, dict):
        return ref.keys() == actual.keys() and all(_same_structure(ref[k], actual[k]) for k in ref)
    return not isinstance(ref, Tensor) and not isinstance(actual, Tensor)


def _apply(metric: Metric, ref: object, actual: object) -> object:
    if isinstance(ref, Tensor) and isinstance(actual, Tensor):
        return metric(ref, actual)
    if isinstance(ref, (list, tuple)) and isinstance(actual, (list, tuple)):
        return [_apply(metric, r, a) for r, a in zip(ref, actual, strict=True)]
    if isinstance(ref, dict) and isinstance(actual, dict):
        return {k: _apply(metric, ref[k], actual[k]) for k in ref}
    return None


@dataclass(frozen=True)
class QuantizationComparisonResult:
    """One recorded value of one handle on both sides; metrics keep the value's structure."""

    actual: object
    ref: object

    def __post_init__(self) -> None:
        if not _same_structure(self.ref, self.actual):
            raise ValueError(
                f"cannot compare values of different shapes: ref {_describe(self.ref)} vs "
                f"actual {_describe(self.actual)}"
            )

    def loss(self, metric: Metric) -> object:
        """``metric(ref, actual)`` per tensor leaf: a tensor, list or dict like the value."""
        return _apply(metric, self.ref, self.actual)

    @property
    def sqnr(self) -> object:
        return self.loss(compute_sqnr)

    @property
    def mse_loss(self) -> object:
        return self.loss(compute_mse)

    @property
    def l2(self) -> object:
        return self.loss(compute_normalized_l2)

    @property
    def cosine(self) -> object:
        return self.loss(compute_cosine_similarity)

    def __repr__(self) -> str:  # the tensors themselves are too large to print
        return f"QuantizationComparisonResult(sqnr={self.sqnr}, mse_loss={self.mse_loss})"


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{', '.join(map(_describe, value))}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in value.items()) + "}"
    return type(value).__name__


@dataclass(frozen=True)
class NodeAccuracySummary:
    """How one handle's value differs between the reference and the actual model.

    The module stacks are :func:`module_path` strings; ``results`` has one entry per recorded
    call (one per forward, or per iteration inside a ``map`` body).
    """

    handle: int
    actual_node_name: str
    actual_module_stack: str
    ref_node_name: str
    ref_module_stack: str
    results: Sequence[QuantizationComparisonResult]


def op_name(node: Node) -> str:
    """The short operator name users recognise: ``aten.conv2d.default`` -> ``conv2d``."""
    packet = getattr(node.target, "overloadpacket", None)
    name = getattr(packet, "__name__", None) or getattr(node.target, "__name__", None)
    return str(name or node.target)


def module_path(nn_module_stack: object) -> str:
    """The dotted path of the innermost module in an export ``nn_module_stack`` ("" at top).

    ``{"L__self__": ("", M), "L__self__stem": ("stem", Seq), "L__self__stem.0": ("stem.0",
    Conv2d)}`` gives ``"stem.0"``; a missing or empty stack gives ``""``.
    """
    if not isinstance(nn_module_stack, dict) or not nn_module_stack:
        return ""
    innermost = list(nn_module_stack.values())[-1]
    path = str(innermost[0]) if isinstance(innermost, (list, tuple)) else str(innermost)
    return path.removeprefix(STRICT_SELF_PREFIX)


def compare_results(
    ref_results: LoggerResults, actual_results: LoggerResults
) -> dict[int, NodeAccuracySummary]:
    """Pair the two :func:`~pt2e_quant.debug.loggers.extract_results_from_loggers` maps by handle.

    Handles only the reference has (ops that quantization removed, e.g. a folded batch norm)
    are skipped. Raises ValueError naming the handle and both nodes when the two sides
    recorded differently shaped values, which means the handle was attached to the wrong node.
    """
    summaries: dict[int, NodeAccuracySummary] = {}
    for handle, (ref_name, ref_stack, ref_stats) in ref_results.items():
        if handle not in actual_results:
            continue
        actual_name, actual_stack, actual_stats = actual_results[handle]
        try:
            results = [
                QuantizationComparisonResult(actual=a, ref=r)
                for r, a in zip(ref_stats, actual_stats, strict=False)  # calls both recorded
            ]
        except ValueError as error:
            raise ValueError(
                f"debug handle {handle}: reference node {ref_name!r} and actual node "
                f"{actual_name!r} recorded different shapes ({error}); the handle was copied "
                "onto a node that does not compute the same value"
            ) from error
        summaries[handle] = NodeAccuracySummary(
            handle=handle,
            actual_node_name=actual_name,
            actual_module_stack=module_path(actual_stack),
            ref_node_name=ref_name,
            ref_module_stack=module_path(ref_stack),
            results=results,
        )
    return summaries
