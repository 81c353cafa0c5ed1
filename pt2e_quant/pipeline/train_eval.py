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

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.graph.aten_args import argument, set_argument
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.pipeline.model_checks import check_exported_graph_module

__all__ = [
    "DROPOUT_OPS",
    "TrainingModeOpWarning",
    "is_training_mode_op",
    "updates_running_stats",
    "warn_training_mode_ops",
    "move_exported_model_to_eval",
    "move_exported_model_to_train",
    "allow_exported_model_train_eval",
    "disallow_eval_train",
]

_aten = torch.ops.aten

#: The functional dropout overloads an export records; each takes its ``train`` flag third.
#: Not training, each may hand back its input itself (see ``aliasing.MAY_RETURN_INPUT``).
DROPOUT_OPS = frozenset(
    {
        _aten.dropout.default,
        _aten.feature_dropout.default,
        _aten.alpha_dropout.default,
        _aten.feature_alpha_dropout.default,
    }
)

#: Every dropout spelling, by the name of its flag: ``nn.Dropout(inplace=True)`` records
#: ``dropout_``, ``nn.Dropout1d/2d/3d`` ``feature_dropout``, a decomposed graph ``native_dropout``.
_DROPOUT_FLAGS: dict[object, str] = dict.fromkeys(
    (
        *DROPOUT_OPS,
        _aten.dropout_.default,
        _aten.feature_dropout_.default,
        _aten.alpha_dropout_.default,
        _aten.feature_alpha_dropout_.default,
        _aten.native_dropout.default,
    ),
    "train",
)

#: RReLU draws a random slope while training and uses the mean slope otherwise.
_RRELU_FLAGS: dict[object, str] = dict.fromkeys(
    (
        _aten.rrelu.default,
        _aten.rrelu_.default,
        _aten.rrelu_with_noise.default,
        _aten.rrelu_with_noise_.default,
    ),
    "training",
)

#: Normalizations that read running statistics in inference mode and update them in training
#: mode. ``_native_batch_norm_legit_functional`` is what ``ExportedProgram.run_decompositions``
#: leaves of a training batch norm; ``instance_norm`` calls its flag ``use_input_stats``.
_NORMALIZATION_FLAGS: dict[object, str] = {
    **dict.fromkeys(
        (
            _aten.batch_norm.default,
            _aten.native_batch_norm.default,
            _aten._native_batch_norm_legit.default,
            _aten._native_batch_norm_legit_functional.default,
            _aten.cudnn_batch_norm.default,
            _aten.miopen_batch_norm.default,
        ),
        "training",
    ),
    _aten.instance_norm.default: "use_input_stats",
}

#: Ops whose behaviour follows a boolean argument meaning "training", by schema name.
_MODE_FLAGS: dict[object, str] = {**_DROPOUT_FLAGS, **_RRELU_FLAGS, **_NORMALIZATION_FLAGS}

# Batch-norm overloads that say the mode by which overload they are rather than by a flag.
_BN_LEGIT = _aten._native_batch_norm_legit.default
_BN_LEGIT_NO_TRAINING = _aten._native_batch_norm_legit_no_training.default
_BN_WITH_UPDATE = _aten._batch_norm_with_update.default
_BN_NO_UPDATE = _aten._batch_norm_no_update.default


class TrainingModeOpWarning(UserWarning):
    """Post-training quantization of a graph whose dropout / batch norm run in training mode."""


def _switchable(node: Node) -> bool:
    """A normalization without running statistics (``track_running_stats=False``) normalizes
    with the batch's statistics in either mode, so its flag is not a mode to switch (set to
    False, torch refuses to run it); every other moded op switches."""
    return node.target not in _NORMALIZATION_FLAGS or argument(node, "running_mean") is not None


def _mode_flag(node: Node, name: str) -> bool:
    """The node's flag, positional or keyword, with the schema's default when left out."""
    schema_default = next(
        (arg.default_value for arg in node.target._schema.arguments if arg.name == name), None
    )
    return argument(node, name, schema_default) is True


def is_training_mode_op(node: Node) -> bool:
    """Whether ``node`` is a dropout, RReLU or normalization that behaves as in training (a
    normalization without running statistics has no other mode, so it is not one)."""
    if node.op != "call_function":
        return False
    if node.target is _BN_WITH_UPDATE:
        return True
    name = _MODE_FLAGS.get(node.target)
    return name is not None and _switchable(node) and _mode_flag(node, name)


def updates_running_stats(node: Node) -> bool:
    """Whether ``node`` writes its ``running_mean`` / ``running_var`` although its schema does
    not say so (``aten.batch_norm`` and friends in training mode)."""
    return node.target in _NORMALIZATION_FLAGS and is_training_mode_op(node)


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
    if _mode_flag(node, name) is training:
        return False
    set_argument(node, name, training)
    return True


def _swap_flagless_batch_norm(node: Node, training: bool) -> bool:
    """Move a batch norm between overloads that say the mode by what they are: the no-training
    ``_native_batch_norm_legit`` takes no flag (moving it to training inserts one), and
    ``_batch_norm_with_update`` / ``_no_update`` take the same arguments."""
    if training and node.target is _BN_LEGIT_NO_TRAINING:
        x, weight, bias, mean, var, momentum, eps = node.args
        node.target = _BN_LEGIT
        node.args = (x, weight, bias, mean, var, True, momentum, eps)
        return True
    if training and node.target is _BN_NO_UPDATE and argument(node, "running_mean") is not None:
        node.target = _BN_WITH_UPDATE
        return True
    if not training and node.target is _BN_WITH_UPDATE:
        node.target = _BN_NO_UPDATE
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
        name = _MODE_FLAGS.get(node.target)
        if name is not None and _switchable(node):
            changed |= _set_mode_flag(node, name, training)
    return changed


#: What ``run_decompositions`` leaves of a training dropout: a random mask with no flag left.
_RANDOM_MASK_OPS = frozenset({_aten.bernoulli, _aten.bernoulli_})


def _warn_unswitchable_random_ops(gm: GraphModule, caller: str) -> None:
    """A dropout decomposed before the switch is a bernoulli mask times the input: nothing in
    the graph says it is a dropout, so it keeps drawing; say so instead of leaving it silent."""
    node = next(
        (
            n
            for n in gm.graph.nodes
            if getattr(n.target, "overloadpacket", None) in _RANDOM_MASK_OPS
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
