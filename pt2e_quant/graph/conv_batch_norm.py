"""What folding a batch norm into the conv / linear before it needs, shared by PTQ and QAT.

Post-training quantization folds inference batch norms before annotation
(``fold_batch_norm``); quantization-aware training simulates the fold while training
(``simulate_batch_norm_folding``) and performs it at convert (``fold_simulated_batch_norm``). All
three agree on which ops qualify, on the arithmetic, and on how folded tensors are stored::

    s = gamma / sqrt(var + eps)
    w' = w * s            (along the layer's output channels)
    b' = (b - mean) * s + beta

The arithmetic follows ``torch.nn.utils.fusion.fuse_conv_bn_weights`` step for step, so folded
weights are bit-identical to the ones the peers produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.errors import describe_node
from pt2e_quant.graph.aten_args import argument, attribute_owner, module_constant
from pt2e_quant.graph.constants import free_attribute_name
from pt2e_quant.ops.families import (
    BATCH_NORM_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    CONVOLUTION_OPS,
    LINEAR_OPS,
    NATIVE_BATCH_NORM_OPS,
)

__all__ = [
    "BATCH_NORMS",
    "CONVS",
    "LINEARS",
    "channel_dim_matches",
    "scale_output_channels",
    "TUPLE_BATCH_NORMS",
    "BatchNormConstants",
    "batch_norm_constants",
    "drop_batch_counters",
    "first_reader",
    "folded_weight_and_bias",
    "is_foldable_layer",
    "is_transposed",
    "readers_by_target",
    "store_constant",
    "torchao_rewrite_rank",
    "why_not_foldable",
]

_aten = torch.ops.aten

#: the layers a batch norm folds into, in every spelling (``convolution`` after decomposition)
CONVS = CONV_OPS | CONV_TRANSPOSE_OPS | CONVOLUTION_OPS
TRANSPOSED_CONVS = CONV_TRANSPOSE_OPS
LINEARS = LINEAR_OPS
BATCH_NORMS = BATCH_NORM_OPS | NATIVE_BATCH_NORM_OPS
#: these return (output, save_mean, save_invstd); ``batch_norm`` returns the output alone
TUPLE_BATCH_NORMS = frozenset(op for op in BATCH_NORMS if len(op._schema.returns) > 1)


def is_foldable_layer(node: object) -> bool:
    """A conv / transposed conv / linear call, the layers a batch norm can fold into."""
    return isinstance(node, Node) and node.op == "call_function" and node.target in CONVS | LINEARS


def is_transposed(layer: Node) -> bool:
    if layer.target in CONVOLUTION_OPS:
        return bool(argument(layer, "transposed", False))
    return layer.target in TRANSPOSED_CONVS


def channel_dim_matches(layer: Node) -> bool:
    """BatchNorm normalizes dim 1; for linear that is the output features only on 2-D outputs."""
    if layer.target not in LINEARS:
        return True
    value = layer.meta.get("val")
    return isinstance(value, torch.Tensor) and value.dim() == 2


def first_reader(node: Node) -> Node:
    """The first reader of ``node`` in node order (the next node if nobody reads it).

    torchao's QAT prepare and convert rewrite conv-bn with fx's subgraph rewriter, which
    inserts a replacement right before the first reader of the replaced pattern's output, the
    batch norm; the QAT passes place their layers there too, so graphs list ops in its order.
    """
    reader = node.next
    while node.users and reader not in node.users:
        reader = reader.next
    return reader


#: The layers torchao's QAT rewrites visit, in their order.
_TORCHAO_REWRITE_ORDER = (
    _aten.conv1d.default,
    _aten.conv2d.default,
    _aten.conv_transpose1d.default,
    _aten.conv_transpose2d.input,
)


def torchao_rewrite_rank(layer: Node) -> tuple[int, bool]:
    """Sort key putting conv-bn pairs in the order torchao's QAT rewrites handle them.

    It rewrites conv1d, conv2d, conv_transpose1d, conv_transpose2d in turn, within each the
    layers with a bias first, each group in node order (sort stably). Two pairs placed before
    the same reader (a residual add) end up in the order they were rewritten. Layers torchao
    does not rewrite (conv3d, linear, ...) rank last.
    """
    known = layer.target in _TORCHAO_REWRITE_ORDER
    kind = _TORCHAO_REWRITE_ORDER.index(layer.target) if known else len(_TORCHAO_REWRITE_ORDER)
    return kind, argument(layer, "bias") is None


def why_not_foldable(gm: GraphModule, layer: Node, batch_norm: Node) -> str | None:
    """Why the pair cannot be folded (a reason for a warning), or None when it can.

    Folding needs the layer's output to reach nothing but the batch norm, the batch norm to
    normalize the layer's output channels, and every tensor involved to be a module constant.
    """
    if len(layer.users) != 1:
        return f"the output of {describe_node(layer)} is also read by other nodes"
    if not channel_dim_matches(layer):
        return f"its channel dimension is not the output features of {describe_node(layer)}"
    if module_constant(gm, argument(layer, "weight")) is None:
        return f"the weight of {describe_node(layer)} is not a parameter of the module"
    bias = argument(layer, "bias")
    if bias is not None and module_constant(gm, bias) is None:
        return f"the bias of {describe_node(layer)} is not a parameter of the module"
    if batch_norm_constants(gm, batch_norm) is None:
        return (
            "its running statistics or affine parameters are not constants of the module "
            "(was it built with track_running_stats=False?)"
        )
    return None


@dataclass
class BatchNormConstants:
    """The module constants of one batch norm; gamma / beta are None without ``affine``."""

    gamma: torch.Tensor | None
    beta: torch.Tensor | None
    mean: torch.Tensor
    var: torch.Tensor
    eps: float


def batch_norm_constants(gm: GraphModule, batch_norm: Node) -> BatchNormConstants | None:
    """The batch norm's constants, or None when its statistics or affine parameters are not
    module constants (``track_running_stats=False``, parameters passed as inputs)."""
    mean = module_constant(gm, argument(batch_norm, "running_mean"))
    var = module_constant(gm, argument(batch_norm, "running_var"))
    if mean is None or var is None:
        return None
    affine = []
    for name in ("weight", "bias"):
        node = argument(batch_norm, name)
        value = module_constant(gm, node)
        if node is not None and value is None:
            return None
        affine.append(value)
    return BatchNormConstants(affine[0], affine[1], mean, var, float(argument(batch_norm, "eps")))


def scale_output_channels(weight: torch.Tensor, scale: torch.Tensor, layer: Node) -> torch.Tensor:
    """Multiply ``weight`` by ``scale`` along the layer's output channels."""
    trailing = [1] * (weight.dim() - 2)
    if not is_transposed(layer):
        return weight * scale.reshape([-1, 1, *trailing])
    # A transposed conv's weight is (in, out / groups, k...): output channel g * (out/groups) + j
    # lives at [group g's rows, j].
    groups = int(argument(layer, "groups", 1))
    grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
    scaled = grouped * scale.reshape(groups, 1, weight.shape[1], *trailing)
    return scaled.reshape(weight.shape)


def folded_weight_and_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: BatchNormConstants, layer: Node
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's weight and bias with the batch norm folded in (new tensors)."""
    with torch.no_grad():
        old_bias = bias if bias is not None else torch.zeros_like(bn.mean)
        gamma = bn.gamma if bn.gamma is not None else torch.ones_like(bn.mean)
        beta = bn.beta if bn.beta is not None else torch.zeros_like(bn.mean)
        inv_std = torch.rsqrt(bn.var + bn.eps)
        new_weight = scale_output_channels(weight, gamma * inv_std, layer).to(weight.dtype)
        new_bias = ((old_bias - bn.mean) * inv_std * gamma + beta).to(
            bias.dtype if bias is not None else weight.dtype
        )
    return new_weight, new_bias


def readers_by_target(gm: GraphModule) -> dict[str, list[Node]]:
    """Every node reading each get_attr target (through any get_attr node of that target)."""
    readers: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            readers.setdefault(str(node.target), []).extend(node.users)
    return readers


def store_constant(
    gm: GraphModule,
    value: torch.Tensor,
    *,
    template: Node | None,
    owners: set[Node],
    readers: dict[str, list[Node]],
    before: Node,
    fake_like: Node | None = None,
) -> Node:
    """A get_attr node holding ``value``, standing in for the constant ``template``.

    Folding writes new tensors and never modifies existing ones. When only ``owners`` read
    ``template``'s attribute, the attribute is rebound on the working copy (which owns its
    containers, so the user's model keeps its tensor) and ``template`` itself is returned.
    Otherwise, for instance one weight feeding two convs each with its own batch norm, the
    value is registered under a fresh name so every other reader keeps the value it had.

    A new node needs a fake tensor as its ``val``. Making one from ``value`` costs a fake-mode
    conversion (a few hundred microseconds, a noticeable share of preparing a small model), so
    the ``val`` of ``fake_like`` (the batch norm's running mean for a new bias) is reused when
    it has the same shape, dtype and strides.
    """
    parameter = torch.nn.Parameter(value, requires_grad=False)
    if template is not None and set(readers.get(str(template.target), ())) <= owners:
        owner, leaf = attribute_owner(gm, str(template.target))
        setattr(owner, leaf, parameter)
        return template
    base = str(template.target) if template is not None else f"{before.name}_bias"
    name = free_attribute_name(gm, base.replace(".", "_") + "_bn_folded")
    gm.register_parameter(name, parameter)
    with gm.graph.inserting_before(before):
        attr = gm.graph.get_attr(name)
    if template is not None:
        attr.meta = dict(template.meta)
    else:
        reusable = fake_like.meta.get("val") if fake_like is not None else None
        fake = before.meta.get("val")
        if _describes(reusable, value):
            attr.meta["val"] = reusable
        elif isinstance(fake, torch.Tensor) and hasattr(fake, "fake_mode"):
            attr.meta["val"] = fake.fake_mode.from_tensor(value, static_shapes=True)
    return attr


def _describes(fake: object, value: torch.Tensor) -> bool:
    """Whether the fake tensor ``fake`` has ``value``'s shape, dtype and strides."""
    return (
        isinstance(fake, torch.Tensor)
        and hasattr(fake, "fake_mode")
        and fake.shape == value.shape
        and fake.dtype == value.dtype
        and fake.stride() == value.stride()
    )


def drop_batch_counters(gm: GraphModule, batch_norms: list[Node]) -> None:
    """Erase the ``num_batches_tracked += 1`` export recorded for batch norms being folded.

    The counter belongs to a layer that no longer exists after folding; leaving the in-place
    add would keep a buffer mutation (an op no backend delegates) in the deployed graph.
    """
    counters = set()
    for batch_norm in batch_norms:
        mean = argument(batch_norm, "running_mean")
        if isinstance(mean, Node) and mean.op == "get_attr":
            prefix = str(mean.target).rpartition(".")[0]
            counters.add(f"{prefix}.num_batches_tracked" if prefix else "num_batches_tracked")
    if not counters:
        return
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and node.target in counters:
            for user in list(node.users):
                if user.target is _aten.add_.Tensor and not user.users:
                    gm.graph.erase_node(user)
