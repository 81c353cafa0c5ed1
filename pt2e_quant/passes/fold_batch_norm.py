"""Fold inference batch norm into the conv / linear before it, ahead of annotation.

Post-training quantization quantizes the folded weight (the one the deployed kernel uses), so
the batch norm has to disappear before observers are placed::

    y = batch_norm(conv(x, w, b), gamma, beta, mean, var, eps)
    ->  y = conv(x, w * s, (b - mean) * s + beta)      with s = gamma / sqrt(var + eps)

``s`` scales the conv's output channels: dim 0 of a conv / linear weight, dim 1 of a
transposed conv's weight within each group. The arithmetic follows
``torch.nn.utils.fusion.fuse_conv_bn_weights`` step for step, so the folded weights are
bit-identical to the ones the peers produce.

Folding writes new tensors and never modifies existing ones. A weight or bias that is read by
anything else (for instance one weight feeding two convs, each with its own batch norm) is
left alone and the folded copy is registered under a new name, so every reader keeps the
value it had.

A batch norm is left in place, with a :class:`BatchNormNotFoldedWarning` naming it, when its
statistics or the conv's weight are not constants of the module (``track_running_stats=False``,
weights passed as inputs), or when the conv's output is also read elsewhere. One exported in
training mode is folded with its running statistics (the inference result) and warned about.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from torch.fx import GraphModule, Node

from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.graph.aten_args import argument, module_constant, set_argument
from pt2e_quant.graph.conv_batch_norm import (
    BATCH_NORMS,
    TUPLE_BATCH_NORMS,
    BatchNormConstants,
    batch_norm_constants,
    drop_batch_counters,
    folded_weight_and_bias,
    is_foldable_layer,
    readers_by_target,
    store_constant,
    why_not_foldable,
)
from pt2e_quant.graph.node_meta import copy_debug_handle
from pt2e_quant.graph.training_mode import TrainingModeOpWarning

__all__ = ["fold_batch_norm", "BatchNormNotFoldedWarning", "BatchNormInTrainingModeWarning"]


class BatchNormNotFoldedWarning(UserWarning):
    """A batch norm after a conv / linear could not be folded and stays in the graph."""


class BatchNormInTrainingModeWarning(TrainingModeOpWarning):
    """A batch norm exported in training mode was folded with its running statistics.

    A :class:`TrainingModeOpWarning`, so filtering that silences this one too.
    """


@dataclass
class _Candidate:
    """A batch norm directly after a conv / linear, with the constants folding needs."""

    layer: Node
    batch_norm: Node
    constants: BatchNormConstants


def _output_readers(batch_norm: Node) -> list[Node] | None:
    """Nodes that read the batch norm's normalized output; None if its statistics are read too.

    A ``getitem`` of a statistic that nothing reads does not count: export keeps such nodes
    when the model calls the aten batch norm itself, and dead-code removal drops them once
    the batch norm is folded.
    """
    if batch_norm.target not in TUPLE_BATCH_NORMS:
        return list(batch_norm.users)
    readers = []
    for user in batch_norm.users:
        if user.op != "call_function" or user.target is not operator.getitem:
            return None
        if user.args[1] == 0:
            readers.append(user)
        elif user.users:
            return None
    return readers


def _why_not_foldable(gm: GraphModule, layer: Node, batch_norm: Node) -> str | None:
    reason = why_not_foldable(gm, layer, batch_norm)
    if reason is None and _output_readers(batch_norm) is None:
        return "its saved mean / inverse std outputs are used"
    return reason


def _candidate(gm: GraphModule, batch_norm: Node) -> _Candidate | None:
    layer = argument(batch_norm, "input")
    if not is_foldable_layer(layer):
        return None
    reason = _why_not_foldable(gm, layer, batch_norm)
    if reason is not None:
        warn_user(
            f"{describe_node(batch_norm)} after {describe_node(layer)} is not folded: {reason}. "
            "It stays in the graph as a float op.",
            BatchNormNotFoldedWarning,
        )
        return None
    if argument(batch_norm, "training", False):
        warn_user(
            f"{describe_node(batch_norm)} was exported in training mode; it is folded into "
            f"{describe_node(layer)} with its running statistics, i.e. with inference behaviour. "
            "Call model.eval() before torch.export.export to silence this.",
            BatchNormInTrainingModeWarning,
        )
    constants = batch_norm_constants(gm, batch_norm)
    assert constants is not None  # checked by _why_not_foldable
    return _Candidate(layer, batch_norm, constants)


def _fold(gm: GraphModule, c: _Candidate, readers: dict[str, list[Node]]) -> None:
    weight_node, bias_node = argument(c.layer, "weight"), argument(c.layer, "bias")
    weight, bias = folded_weight_and_bias(
        module_constant(gm, weight_node),  # type: ignore[arg-type]
        module_constant(gm, bias_node),
        c.constants,
        c.layer,
    )
    for name, value, template in (("weight", weight, weight_node), ("bias", bias, bias_node)):
        stored = store_constant(
            gm,
            value,
            template=template,
            owners={c.layer},
            readers=readers,
            before=c.layer,
            fake_like=argument(c.batch_norm, "running_mean"),
        )
        if stored is not template:
            set_argument(c.layer, name, stored)
    if c.batch_norm.target in TUPLE_BATCH_NORMS:
        for reader in _output_readers(c.batch_norm) or []:
            reader.replace_all_uses_with(c.layer)
    else:
        c.batch_norm.replace_all_uses_with(c.layer)
    # The folded layer now computes what the batch norm did, so the numeric debugger must
    # compare its output with the float batch norm's, not with the pre-normalization conv.
    copy_debug_handle(c.batch_norm, c.layer)


def fold_batch_norm(gm: GraphModule) -> bool:
    """Fold every foldable conv / linear + batch norm pair of ``gm`` (not its sub-graphs)."""
    candidates = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in BATCH_NORMS:
            candidate = _candidate(gm, node)
            if candidate is not None:
                candidates.append(candidate)
    if not candidates:
        return False
    # Folding only adds attributes under fresh names, so who reads what is computed once.
    readers = readers_by_target(gm)
    for candidate in candidates:
        _fold(gm, candidate, readers)
    drop_batch_counters(gm, [c.batch_norm for c in candidates])
    return True
