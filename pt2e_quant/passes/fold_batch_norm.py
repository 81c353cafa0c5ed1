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
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.errors import describe_node, warn_user

__all__ = ["fold_batch_norm", "BatchNormNotFoldedWarning", "BatchNormInTrainingModeWarning"]

_aten = torch.ops.aten


class BatchNormNotFoldedWarning(UserWarning):
    """A batch norm after a conv / linear could not be folded and stays in the graph."""


class BatchNormInTrainingModeWarning(UserWarning):
    """A batch norm exported in training mode was folded with its running statistics."""


_CONVS = frozenset(
    {
        _aten.conv1d.default,
        _aten.conv1d.padding,
        _aten.conv2d.default,
        _aten.conv2d.padding,
        _aten.conv3d.default,
        _aten.conv3d.padding,
        _aten.conv_transpose1d.default,
        _aten.conv_transpose2d.input,
        _aten.conv_transpose3d.input,
        _aten.convolution.default,
    }
)
_TRANSPOSED_CONVS = frozenset(
    {_aten.conv_transpose1d.default, _aten.conv_transpose2d.input, _aten.conv_transpose3d.input}
)
_LINEARS = frozenset({_aten.linear.default})
_BATCH_NORMS = frozenset(
    {
        _aten.batch_norm.default,
        _aten.native_batch_norm.default,
        _aten._native_batch_norm_legit.default,
        _aten._native_batch_norm_legit_no_training.default,
    }
)
# These return (output, save_mean, save_invstd); the others return the output alone.
_TUPLE_BATCH_NORMS = _BATCH_NORMS - {_aten.batch_norm.default}


def _argument(node: Node, name: str, default: Any = None) -> Any:
    """An argument of an aten call by schema name, whether passed positionally or by keyword."""
    for index, argument in enumerate(node.target._schema.arguments):  # type: ignore[union-attr]
        if argument.name == name:
            if index < len(node.args):
                return node.args[index]
            return node.kwargs.get(name, default)
    return default


def _set_argument(node: Node, name: str, value: Any) -> None:
    names = [a.name for a in node.target._schema.arguments]  # type: ignore[union-attr]
    index = names.index(name)
    if index < len(node.args):
        args = list(node.args)
        args[index] = value
        node.args = tuple(args)
    elif index == len(node.args):
        node.args = (*node.args, value)
    else:
        node.kwargs = {**node.kwargs, name: value}


def _get_attr(gm: GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor behind a get_attr node; None for anything that is not a module constant."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    owner: Any = gm
    for part in str(node.target).split("."):
        owner = getattr(owner, part, None)
    return owner if isinstance(owner, torch.Tensor) else None


@dataclass
class _Candidate:
    """A batch norm directly after a conv / linear, with the tensors folding needs."""

    layer: Node
    batch_norm: Node
    weight: torch.Tensor
    bias: torch.Tensor | None
    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    mean: torch.Tensor
    var: torch.Tensor
    eps: float


def _is_layer(node: Any) -> bool:
    return (
        isinstance(node, Node) and node.op == "call_function" and node.target in _CONVS | _LINEARS
    )


def _is_transposed(layer: Node) -> bool:
    if layer.target is _aten.convolution.default:
        return bool(_argument(layer, "transposed", False))
    return layer.target in _TRANSPOSED_CONVS


def _channel_dim_matches(layer: Node) -> bool:
    """BatchNorm normalizes dim 1; for linear that is the output features only on 2-D outputs."""
    if layer.target not in _LINEARS:
        return True
    value = layer.meta.get("val")
    return isinstance(value, torch.Tensor) and value.dim() == 2


def _output_readers(batch_norm: Node) -> list[Node] | None:
    """Nodes that read the batch norm's normalized output; None if its statistics are read too."""
    if batch_norm.target not in _TUPLE_BATCH_NORMS:
        return list(batch_norm.users)
    readers = []
    for user in batch_norm.users:
        if user.op != "call_function" or user.target is not operator.getitem or user.args[1] != 0:
            return None
        readers.append(user)
    return readers


def _why_not_foldable(gm: GraphModule, layer: Node, batch_norm: Node) -> str | None:
    if len(layer.users) != 1:
        return f"the output of {describe_node(layer)} is also read by other nodes"
    if not _channel_dim_matches(layer):
        return f"its channel dimension is not the output features of {describe_node(layer)}"
    if _get_attr(gm, _argument(layer, "weight")) is None:
        return f"the weight of {describe_node(layer)} is not a parameter of the module"
    if _argument(layer, "bias") is not None and _get_attr(gm, _argument(layer, "bias")) is None:
        return f"the bias of {describe_node(layer)} is not a parameter of the module"
    for name in ("running_mean", "running_var"):
        if _get_attr(gm, _argument(batch_norm, name)) is None:
            return f"it has no running statistics ({name}); was it built with track_running_stats=False?"
    for name in ("weight", "bias"):
        arg = _argument(batch_norm, name)
        if arg is not None and _get_attr(gm, arg) is None:
            return f"its {name} is not a parameter of the module"
    if _output_readers(batch_norm) is None:
        return "its saved mean / inverse std outputs are used"
    return None


def _candidate(gm: GraphModule, batch_norm: Node) -> _Candidate | None:
    layer = _argument(batch_norm, "input")
    if not _is_layer(layer):
        return None
    reason = _why_not_foldable(gm, layer, batch_norm)
    if reason is not None:
        warn_user(
            f"{describe_node(batch_norm)} after {describe_node(layer)} is not folded: {reason}. "
            "It stays in the graph as a float op.",
            BatchNormNotFoldedWarning,
        )
        return None
    if _argument(batch_norm, "training", False):
        warn_user(
            f"{describe_node(batch_norm)} was exported in training mode; it is folded into "
            f"{describe_node(layer)} with its running statistics, i.e. with inference behaviour. "
            "Call model.eval() before torch.export.export to silence this.",
            BatchNormInTrainingModeWarning,
        )
    return _Candidate(
        layer=layer,
        batch_norm=batch_norm,
        weight=_get_attr(gm, _argument(layer, "weight")),  # type: ignore[arg-type]
        bias=_get_attr(gm, _argument(layer, "bias")),
        gamma=_get_attr(gm, _argument(batch_norm, "weight")),
        beta=_get_attr(gm, _argument(batch_norm, "bias")),
        mean=_get_attr(gm, _argument(batch_norm, "running_mean")),  # type: ignore[arg-type]
        var=_get_attr(gm, _argument(batch_norm, "running_var")),  # type: ignore[arg-type]
        eps=float(_argument(batch_norm, "eps")),
    )


def _per_output_channel(scale: torch.Tensor, weight: torch.Tensor, layer: Node) -> torch.Tensor:
    """Multiply ``weight`` by ``scale`` along the layer's output channels."""
    trailing = [1] * (weight.dim() - 2)
    if not _is_transposed(layer):
        return weight * scale.reshape([-1, 1, *trailing])
    # A transposed conv's weight is (in, out / groups, k...): output channel g * (out/groups) + j
    # lives at [group g's rows, j].
    groups = int(_argument(layer, "groups", 1))
    grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    scaled = grouped * scale.reshape(groups, 1, weight.shape[1], *trailing)
    return scaled.reshape(weight.shape)


def _folded_tensors(c: _Candidate) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        bias = c.bias if c.bias is not None else torch.zeros_like(c.mean)
        gamma = c.gamma if c.gamma is not None else torch.ones_like(c.mean)
        beta = c.beta if c.beta is not None else torch.zeros_like(c.mean)
        inv_std = torch.rsqrt(c.var + c.eps)
        weight = _per_output_channel(gamma * inv_std, c.weight, c.layer).to(c.weight.dtype)
        folded_bias = ((bias - c.mean) * inv_std * gamma + beta).to(
            c.bias.dtype if c.bias is not None else c.weight.dtype
        )
    return weight, folded_bias


def _readers_by_target(gm: GraphModule) -> dict[str, list[Node]]:
    """Every node reading each get_attr target (through any get_attr node of that target)."""
    readers: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers.setdefault(str(node.target), []).extend(node.users)
    return readers


def _fresh_name(gm: GraphModule, base: str) -> str:
    stem = base.replace(".", "_") + "_bn_folded"
    index = 0
    while hasattr(gm, f"{stem}_{index}"):
        index += 1
    return f"{stem}_{index}"


def _store(
    gm: GraphModule,
    layer: Node,
    arg_name: str,
    value: torch.Tensor,
    template: Node | None,
    readers: dict[str, list[Node]],
) -> None:
    """Point the layer's ``arg_name`` at ``value``: in place if only the layer reads it, else a new attribute."""
    parameter = torch.nn.Parameter(value, requires_grad=False)
    if template is not None and readers.get(str(template.target)) == [layer]:
        owner_path, _, leaf = str(template.target).rpartition(".")
        owner = gm.get_submodule(owner_path) if owner_path else gm
        # The working copy owns its containers (GraphModule construction copies the module
        # path of every get_attr), so replacing the attribute leaves the user's model alone.
        setattr(owner, leaf, parameter)
        return
    base = str(template.target) if template is not None else f"{layer.name}_bias"
    name = _fresh_name(gm, base)
    gm.register_parameter(name, parameter)
    with gm.graph.inserting_before(layer):
        attr = gm.graph.get_attr(name)
    if template is not None:
        attr.meta = dict(template.meta)
    else:
        fake = layer.meta.get("val")
        if isinstance(fake, torch.Tensor) and hasattr(fake, "fake_mode"):
            attr.meta["val"] = fake.fake_mode.from_tensor(value, static_shapes=True)
    _set_argument(layer, arg_name, attr)


def _fold(gm: GraphModule, c: _Candidate, readers: dict[str, list[Node]]) -> None:
    weight, bias = _folded_tensors(c)
    _store(gm, c.layer, "weight", weight, _argument(c.layer, "weight"), readers)
    _store(gm, c.layer, "bias", bias, _argument(c.layer, "bias"), readers)
    if c.batch_norm.target in _TUPLE_BATCH_NORMS:
        for reader in _output_readers(c.batch_norm) or []:
            reader.replace_all_uses_with(c.layer)
    else:
        c.batch_norm.replace_all_uses_with(c.layer)


def fold_batch_norm(gm: GraphModule) -> bool:
    """Fold every foldable conv / linear + batch norm pair of ``gm`` (not its sub-graphs)."""
    candidates = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _BATCH_NORMS:
            candidate = _candidate(gm, node)
            if candidate is not None:
                candidates.append(candidate)
    # Folding only adds attributes under fresh names, so who reads what is computed once.
    readers = _readers_by_target(gm) if candidates else {}
    for candidate in candidates:
        _fold(gm, candidate, readers)
    return bool(candidates)
