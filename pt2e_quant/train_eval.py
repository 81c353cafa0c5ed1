"""Train/eval switching for exported models.

An exported graph has dropout and batch norm baked in with a fixed ``training`` flag, so
``nn.Module.train()`` / ``.eval()`` cannot change their behaviour; ``torch.export`` therefore
makes those methods raise. These functions flip the flag argument on the ops themselves. They
touch only that argument, so each layer keeps its own dropout ``p`` and batch-norm ``momentum``
and ``eps``, and applying one twice changes nothing.

The ``num_batches_tracked`` increment that export records for a batch norm traced in training
mode is left in place: it only matters for ``momentum=None`` (cumulative averaging), and the
graph has no way to express "increment only while training".
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.aten_args import argument
from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.model_checks import check_exported_graph_module
from pt2e_quant.subgraphs import iter_graph_modules

__all__ = [
    "DROPOUT_OPS",
    "TrainingModeOpWarning",
    "is_training_mode_op",
    "warn_training_mode_ops",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "disallow_eval_train",
]

_aten = torch.ops.aten

#: The dropout overloads an export records; each takes its ``train`` flag third.
DROPOUT_OPS = frozenset(
    {
        _aten.dropout.default,
        _aten.feature_dropout.default,
        _aten.alpha_dropout.default,
        _aten.feature_alpha_dropout.default,
    }
)


@dataclass(frozen=True)
class _ModeFlag:
    """Where an op keeps its ``training`` flag: positional index and keyword name."""

    index: int
    name: str


_MODE_FLAGS: dict[object, _ModeFlag] = {
    _aten.batch_norm.default: _ModeFlag(5, "training"),
    _aten.native_batch_norm.default: _ModeFlag(5, "training"),
    _aten._native_batch_norm_legit.default: _ModeFlag(5, "training"),
    **dict.fromkeys(DROPOUT_OPS, _ModeFlag(2, "train")),
}

# The no-training batch-norm overload has no flag (and drops the training overload's
# argument); moving it to training means swapping the overload and inserting the flag.
_BN_LEGIT = _aten._native_batch_norm_legit.default
_BN_LEGIT_NO_TRAINING = _aten._native_batch_norm_legit_no_training.default


class TrainingModeOpWarning(UserWarning):
    """Post-training quantization of a graph whose dropout / batch norm run in training mode."""


def _has_no_running_stats(node: Node) -> bool:
    """A batch norm of ``track_running_stats=False``: it normalizes with the batch's own
    statistics in eval mode too, so its training flag is not a mode to switch (set to False
    without running statistics, torch refuses to run it)."""
    return node.target not in DROPOUT_OPS and argument(node, "running_mean") is None


def is_training_mode_op(node: Node) -> bool:
    """Whether ``node`` is a dropout or batch norm whose graph flag says training (a batch norm
    without running statistics has no other mode, so it is not one)."""
    flag = _MODE_FLAGS.get(node.target) if node.op == "call_function" else None
    if flag is None or _has_no_running_stats(node):
        return False
    if flag.index < len(node.args):
        return node.args[flag.index] is True
    return node.kwargs.get(flag.name) is True


def warn_training_mode_ops(model: GraphModule, api: str) -> None:
    """Warn, naming them, about dropout and batch norm left in training mode before PTQ.

    The exported flag is baked into the graph: the quantized model would keep dropping
    activations at random and normalizing with each batch's statistics, which is almost never
    what post-training quantization is for (batch norms after a conv were already folded with
    their running statistics, with a warning of their own).
    """
    nodes = [
        n for gm in iter_graph_modules(model) for n in gm.graph.nodes if is_training_mode_op(n)
    ]
    if not nodes:
        return
    listed = ", ".join(describe_node(n) for n in nodes[:5])
    more = f" and {len(nodes) - 5} more" if len(nodes) > 5 else ""
    warn_user(
        f"{api}: {listed}{more} run in training mode (the model was exported in training "
        "mode), so the quantized model keeps dropping activations at random / normalizing "
        "with batch statistics. Call model.eval() before torch.export.export, or "
        f"pt2e_quant.move_exported_model_to_eval(exported_model) before {api}.",
        TrainingModeOpWarning,
    )


def _set_mode_flag(node: Node, flag: _ModeFlag, training: bool) -> bool:
    if flag.index < len(node.args):
        if node.args[flag.index] is training:
            return False
        args = list(node.args)
        args[flag.index] = training
        node.args = tuple(args)
        return True
    if node.kwargs.get(flag.name) is training:
        return False
    node.kwargs = {**node.kwargs, flag.name: training}
    return True


def _swap_legit_batch_norm(node: Node, training: bool) -> bool:
    """Move ``_native_batch_norm_legit`` between its training and no-training overloads."""
    if training and node.target is _BN_LEGIT_NO_TRAINING:
        x, weight, bias, mean, var, momentum, eps = node.args
        node.target = _BN_LEGIT
        node.args = (x, weight, bias, mean, var, True, momentum, eps)
        return True
    return False


def _set_graph_mode(gm: GraphModule, training: bool) -> bool:
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _swap_legit_batch_norm(node, training):
            changed = True
            continue
        flag = _MODE_FLAGS.get(node.target)
        if flag is not None and not _has_no_running_stats(node):
            changed |= _set_mode_flag(node, flag, training)
    return changed


def _move_to_mode(model: GraphModule, training: bool, caller: str) -> GraphModule:
    check_exported_graph_module(model, caller)
    for gm in iter_graph_modules(model):
        if _set_graph_mode(gm, training):
            gm.recompile()
    # Only the top-level flag: observers and fake-quants must keep their own state (their
    # observing / fake-quantizing switches are separate and explicit).
    model.training = training
    return model


def move_exported_model_to_eval(model: GraphModule) -> GraphModule:
    """Switch dropout and batch norm in an exported model to inference behaviour, in place."""
    return _move_to_mode(model, False, "move_exported_model_to_eval")


def move_exported_model_to_train(model: GraphModule) -> GraphModule:
    """Switch dropout and batch norm in an exported model to training behaviour, in place."""
    return _move_to_mode(model, True, "move_exported_model_to_train")


def _train_via_graph(self: GraphModule, mode: bool = True) -> GraphModule:
    if mode:
        return move_exported_model_to_train(self)
    return move_exported_model_to_eval(self)


def _eval_via_graph(self: GraphModule) -> GraphModule:
    return move_exported_model_to_eval(self)


def allow_exported_model_train_eval(model: GraphModule) -> GraphModule:
    """Make ``model.train()`` / ``model.eval()`` switch the exported graph's ops, in place."""
    model.train = types.MethodType(_train_via_graph, model)
    model.eval = types.MethodType(_eval_via_graph, model)
    return model


def _refuse_train(self: GraphModule, mode: bool = True) -> GraphModule:
    raise NotImplementedError(
        f"Calling {'train' if mode else 'eval'}() on an exported model cannot change its "
        "dropout / batch-norm behaviour. Use pt2e_quant.move_exported_model_to_train / "
        "move_exported_model_to_eval, or call pt2e_quant.allow_exported_model_train_eval(model) "
        "once to make .train() / .eval() do that."
    )


def _refuse_eval(self: GraphModule) -> GraphModule:
    return _refuse_train(self, False)


def disallow_eval_train(model: GraphModule) -> GraphModule:
    """Make ``model.train()`` / ``model.eval()`` raise with directions, as ``torch.export`` does."""
    model.train = types.MethodType(_refuse_train, model)
    model.eval = types.MethodType(_refuse_eval, model)
    return model
