"""Prepare-time checks of the LLM granularities, so a bad spec fails before calibration.

A per-group weight observer needs a 2-D constant weight whose input columns the group size
divides. (A per-token observer refuses a static spec when it is built, which prepare reports
naming the edge.) Found at prepare, each mistake names the node, the value found and the valid choices, and
nothing has been converted yet. The observers check the same things on the data they see,
but that would be during calibration, after the user's data loader ran.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pt2e_quant.contract.sharing import _anchor_node, describe_edge_or_node
from pt2e_quant.contract.specs import EdgeOrNode
from pt2e_quant.errors import AnnotationError, graph_context
from pt2e_quant.observer.granular import (
    PerGroupMinMaxObserver,
    granular_observer,
    valid_group_sizes,
)

__all__ = ["check_granularity"]


def _observed_value(member: EdgeOrNode) -> object:
    node = member[0] if isinstance(member, tuple) else member
    return node.meta.get("val")


def _check_per_group(
    module: PerGroupMinMaxObserver, member: EdgeOrNode, constants: set, who: str
) -> None:
    where = describe_edge_or_node(member)
    source = member[0] if isinstance(member, tuple) else member
    anchor = _anchor_node(member)
    if source not in constants:
        raise AnnotationError(
            f"{who} put a per-group spec (group_size={module.group_size}) on the {where}, "
            f"which is computed at run time ('{source.name}' is not a weight). Per-group "
            "quantization is for constant 2-D weights: give activations a per-tensor or "
            "per-token spec.\n" + graph_context(anchor)
        )
    value = _observed_value(member)
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape is None:
        return
    if len(shape) != 2:
        raise AnnotationError(
            f"{who} put a per-group spec on the {where}, a weight of shape {shape}; per-group "
            "quantization takes 2-D (out_features, in_features) weights (linear layers).\n"
            + graph_context(anchor)
        )
    if shape[1] % module.group_size:
        raise AnnotationError(
            f"{who} asks for groups of {module.group_size} input columns on the {where}, "
            f"but the weight has {shape[1]} (shape {shape}); valid group sizes for it: "
            f"{valid_group_sizes(shape[1])}. Pick one, or leave this layer to another config."
            "\n" + graph_context(anchor)
        )


def check_granularity(
    module: torch.nn.Module, members: list[EdgeOrNode], constants: Callable[[], set], who: str
) -> None:
    """Raise an AnnotationError naming the node if ``module`` cannot observe ``members``;
    ``constants()`` gives the graph's constant nodes (computed only when needed)."""
    granular = granular_observer(module)  # the observer, or a QAT fake-quant's
    if isinstance(granular, PerGroupMinMaxObserver):
        for member in members:
            _check_per_group(granular, member, constants(), who)
