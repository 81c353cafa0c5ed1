"""Train/eval switching for exported models.

An exported graph has dropout, RReLU and batch / instance norm baked in with a fixed
``training`` flag, so ``nn.Module.train()`` / ``.eval()`` cannot change their behaviour;
``torch.export`` therefore makes those methods raise. These functions flip the flag argument on
the ops themselves (or, for the batch-norm overloads that have no flag, swap the overload).
They touch only that, so each layer keeps its own dropout ``p`` and batch-norm ``momentum`` and
``eps``, and applying one twice changes nothing. Every spelling an export records is covered,
in-place ones and what ``run_decompositions`` makes of them included, because a dropout left in
training mode zeroes half the activations silently; the one exception, a dropout decomposed all
the way into a bernoulli mask, has nothing left to switch and is warned about.

The ``num_batches_tracked`` increment that export records for a batch norm traced in training
mode is left in place: it only matters for ``momentum=None`` (cumulative averaging), and the
graph has no way to express "increment only while training".
"""

from __future__ import annotations

import types

from torch.fx import GraphModule, Node

from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.graph.aten_args import argument, set_argument
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.graph.training_mode import (
    MODE_FLAGS,
    TrainingModeOpWarning,
    has_switchable_mode,
    is_training_mode_op,
    mode_flag,
)
from pt2e_quant.ops.families import BATCH_NORM_MODE_OVERLOADS, RANDOM_MASK_PACKETS
from pt2e_quant.pipeline.model_checks import check_exported_graph_module

__all__ = [
    "TrainingModeOpWarning",
    "warn_training_mode_ops",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "disallow_eval_train",
]


def warn_training_mode_ops(model: GraphModule, api: str) -> None:
    """Warn, naming them, about dropout, RReLU and normalizations left in training mode before
    PTQ.

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
        "mode), so the quantized model keeps drawing random dropout masks / RReLU slopes or "
        "normalizing with batch statistics. Call model.eval() before torch.export.export, or "
        f"pt2e_quant.move_exported_model_to_eval(exported_model) before {api}.",
        TrainingModeOpWarning,
    )


def _set_mode_flag(node: Node, name: str, training: bool) -> bool:
    if mode_flag(node, name) is training:
        return False
    set_argument(node, name, training)
    return True


def _swap_flagless_batch_norm(node: Node, training: bool) -> bool:
    """Move a batch norm between overloads that say the mode by what they are
    (``BATCH_NORM_MODE_OVERLOADS``): the no-training ``_native_batch_norm_legit`` takes no flag
    (moving it to training inserts one, the training overload keeps it and switches by it), and
    ``_batch_norm_with_update`` / ``_no_update`` take the same arguments."""
    for training_op, inference_op in BATCH_NORM_MODE_OVERLOADS:
        flagged = training_op in MODE_FLAGS
        if training and node.target is inference_op:
            if argument(node, "running_mean") is None:
                return False  # no running statistics: the batch's own are its only mode
            node.target = training_op
            if flagged:
                x, weight, bias, mean, var, momentum, eps = node.args
                node.args = (x, weight, bias, mean, var, True, momentum, eps)
            return True
        if not training and node.target is training_op and not flagged:
            node.target = inference_op
            return True
    return False


def _set_graph_mode(gm: GraphModule, training: bool) -> bool:
    changed = False
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _swap_flagless_batch_norm(node, training):
            changed = True
            continue
        name = MODE_FLAGS.get(node.target)
        if name is not None and has_switchable_mode(node):
            changed |= _set_mode_flag(node, name, training)
    return changed


def _warn_unswitchable_random_ops(gm: GraphModule, caller: str) -> None:
    """A dropout decomposed before the switch is a bernoulli mask times the input: nothing in
    the graph says it is a dropout, so it keeps drawing; say so instead of leaving it silent."""
    node = next(
        (
            n
            for n in gm.graph.nodes
            if getattr(n.target, "overloadpacket", None) in RANDOM_MASK_PACKETS
        ),
        None,
    )
    if node is not None:
        warn_user(
            f"{caller}: {describe_node(node)} draws a random mask (what "
            "ExportedProgram.run_decompositions makes of a training-mode dropout), which has no "
            "training flag to switch, so it keeps drawing. Export the model in eval mode, or "
            "call move_exported_model_to_eval before run_decompositions.",
            TrainingModeOpWarning,
        )


def _move_to_mode(model: GraphModule, training: bool, caller: str) -> GraphModule:
    check_exported_graph_module(model, caller)
    for gm in iter_graph_modules(model):
        if _set_graph_mode(gm, training):
            gm.recompile()
        if not training:
            _warn_unswitchable_random_ops(gm, caller)
    # Only the top-level flag: observers and fake-quants must keep their own state (their
    # observing / fake-quantizing switches are separate and explicit).
    model.training = training
    return model


def move_exported_model_to_eval(model: GraphModule) -> GraphModule:
    """Switch dropout, RReLU and batch / instance norm in an exported model to inference
    behaviour, in place."""
    return _move_to_mode(model, False, "move_exported_model_to_eval")


def move_exported_model_to_train(model: GraphModule) -> GraphModule:
    """Switch dropout, RReLU and batch / instance norm in an exported model to training
    behaviour, in place."""
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
