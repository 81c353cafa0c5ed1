"""Reading whether an op of an exported graph behaves as in training, and where that is said.

Export bakes ``model.train()`` / ``.eval()`` into each dropout, RReLU and normalization node:
as a flag argument (``dropout(x, p, train)``, ``batch_norm(..., training, ...)``,
``instance_norm(..., use_input_stats, ...)``) or, for a few batch-norm overloads, by which
overload it is (``_native_batch_norm_legit_no_training``, ``_batch_norm_with_update``). The
train/eval switch rewrites those flags, prepare warns about ops left in training mode, and
aliasing needs to know that a training batch norm writes its running statistics although its
schema does not say so. All three read the mode here.
"""

from __future__ import annotations

from torch.fx import Node

from pt2e_quant.graph.aten_args import argument
from pt2e_quant.ops.families import (
    BATCH_NORM_MODE_OVERLOADS,
    DROPOUT_OPS,
    FLAGGED_BATCH_NORM_OPS,
    INPLACE_DROPOUT_OPS,
    INSTANCE_NORM_OPS,
    NATIVE_DROPOUT_OPS,
    RRELU_OPS,
)

__all__ = [
    "TrainingModeOpWarning",
    "MODE_FLAGS",
    "TRAINING_OVERLOADS",
    "has_switchable_mode",
    "is_training_mode_op",
    "mode_flag",
    "updates_running_stats",
]


class TrainingModeOpWarning(UserWarning):
    """Post-training quantization of a graph whose dropout / batch norm run in training mode.

    The base of every such warning (a batch norm folded with its running statistics warns
    with a subclass), so one filter silences them all. It lives here, beside what reads the
    mode, because passes below the pipeline raise it too.
    """


_NORMALIZATION_FLAGS: dict[object, str] = {
    **dict.fromkeys(FLAGGED_BATCH_NORM_OPS, "training"),
    **dict.fromkeys(INSTANCE_NORM_OPS, "use_input_stats"),
}

#: op -> the schema name of its "training" flag, for every op that has one
MODE_FLAGS: dict[object, str] = {
    **dict.fromkeys(DROPOUT_OPS | INPLACE_DROPOUT_OPS | NATIVE_DROPOUT_OPS, "train"),
    **dict.fromkeys(RRELU_OPS, "training"),
    **_NORMALIZATION_FLAGS,
}

#: the overloads that mean "training" by being that overload, with no flag to read (see
#: ``BATCH_NORM_MODE_OVERLOADS``; ``_native_batch_norm_legit`` has one)
TRAINING_OVERLOADS = frozenset(
    training for training, _ in BATCH_NORM_MODE_OVERLOADS if training not in MODE_FLAGS
)


def has_switchable_mode(node: Node) -> bool:
    """A normalization without running statistics (``track_running_stats=False``) normalizes
    with the batch's statistics in either mode, so its flag is not a mode to switch (set to
    False, torch refuses to run it); every other moded op switches."""
    return node.target not in _NORMALIZATION_FLAGS or argument(node, "running_mean") is not None


def mode_flag(node: Node, name: str) -> bool:
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
    if node.target in TRAINING_OVERLOADS:
        return True
    name = MODE_FLAGS.get(node.target)
    return name is not None and has_switchable_mode(node) and mode_flag(node, name)


def updates_running_stats(node: Node) -> bool:
    """Whether ``node`` writes its ``running_mean`` / ``running_var`` although its schema does
    not say so (``aten.batch_norm`` and friends in training mode)."""
    return node.target in _NORMALIZATION_FLAGS and is_training_mode_op(node)
