"""The graph edits of SmoothQuant: scaled weights, and ``x * (1/s)`` in front of the consumers.

For one :class:`~pt2e_quant.algorithms.smoothing_targets.SmoothingGroup` with scale ``s``::

    before                                  after
    ln = layer_norm(x, ...)                 ln = layer_norm(x, ...)
    q = linear(ln, q_weight, q_bias)        ln_smoothed = mul(ln, _smooth_quant_scale_0)  # 1/s
    k = linear(ln, k_weight, k_bias)        q = linear(ln_smoothed, q_weight', q_bias)    # W*s
                                            k = linear(ln_smoothed, k_weight', k_bias)

or, where the producer can absorb ``1/s`` exactly and only the group reads the activation, no
multiply is inserted: a layer / RMS norm over the last axis takes it into its affine weight
and bias (``ln' = layer_norm(x, w/s, b/s)``), and a linear (optionally followed by ReLUs,
which commute with a positive scale) takes it into its output rows
(``fc1' = linear(x, W1/s[:, None], b1/s)``). Folding matters beyond saving an op: a quantizer
that quantizes the producer's output (XNNPACK's linear-ReLU) would otherwise quantize the
unsmoothed value there and again after the multiply.

Never written into: the tensors of an exported module are the user's model's tensors. A new
tensor is rebound in the attribute's place when only the rewritten op reads that attribute
and export's own container holds it; otherwise (a tied weight, a user module's attribute) it
is registered on ``gm`` under a fresh name and only the rewritten op reads the new name.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.algorithms.smoothing_targets import SmoothingConsumer, SmoothingGroup
from pt2e_quant.contract.annotation import mark_kept_float
from pt2e_quant.graph.aliasing import written_attributes
from pt2e_quant.graph.aten_args import argument, attribute_owner, module_constant, set_argument
from pt2e_quant.graph.constants import add_buffer_constant, free_attribute_name
from pt2e_quant.graph.copy_module import is_owned_container
from pt2e_quant.graph.node_meta import port_meta
from pt2e_quant.ops.families import LAYER_NORM_OPS, LINEAR_OPS, RELU_OPS, RMS_NORM_OPS

__all__ = [
    "scale_consumer_weights",
    "insert_scaling_multiply",
    "fold_into_norm",
    "fold_into_producing_linear",
]

#: prefix of the ``1/s`` buffers the inserted multiplies read
SCALE_BUFFER_PREFIX = "_smooth_quant_scale_"


def _readers(gm: GraphModule, target: str) -> set[Node]:
    """Every node reading attribute ``target`` through any get_attr node of the graph."""
    readers: set[Node] = set()
    for node in gm.graph.find_nodes(op="get_attr", target=target):
        readers.update(node.users)
    return readers


def _store(gm: GraphModule, template: Node, value: torch.Tensor, reader: Node, arg: str) -> None:
    """Make ``reader``'s argument ``arg`` (now ``template``, a get_attr) read ``value``."""
    target = str(template.target)
    old = module_constant(gm, template)
    wrap = isinstance(old, torch.nn.Parameter)
    tensor = torch.nn.Parameter(value, requires_grad=False) if wrap else value
    owner, leaf = attribute_owner(gm, target)
    if is_owned_container(owner) and _readers(gm, target) <= {reader}:
        # nn.Module.__setattr__ keeps the kind: parameter, (non-)persistent buffer, constant
        setattr(owner, leaf, tensor)
        return
    name = free_attribute_name(gm, target.replace(".", "_") + "_smoothed")
    if wrap:
        gm.register_parameter(name, tensor)
    else:
        gm.register_buffer(name, tensor)
    with gm.graph.inserting_before(reader):
        attr = gm.graph.get_attr(name)
    attr.meta = dict(template.meta)
    set_argument(reader, arg, attr)


def _along(scale: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    """``scale`` shaped to broadcast along ``axis`` of a tensor of rank ``rank``."""
    shape = [1] * rank
    shape[axis] = scale.numel()
    return scale.reshape(shape)


def _scaled(value: torch.Tensor, factor: torch.Tensor, axis: int) -> torch.Tensor:
    """A new tensor: ``value`` times ``factor`` along ``axis``, computed in at least float32
    and stored in ``value``'s dtype."""
    dtype = torch.promote_types(value.dtype, torch.float32)
    product = value.detach().to(dtype) * _along(factor.to(dtype), value.dim(), axis)
    return product.to(value.dtype)


def scale_consumer_weights(
    gm: GraphModule, consumers: tuple[SmoothingConsumer, ...], scale: torch.Tensor
) -> None:
    """Give every consumer a weight multiplied by ``scale`` along its input axis."""
    for consumer in consumers:
        weight = module_constant(gm, consumer.weight)
        assert weight is not None, "find_smoothing_groups only returns constant weights"
        new = _scaled(weight, scale, consumer.input_axis)
        _store(gm, consumer.weight, new, consumer.node, consumer.weight_argument)


def _fake_value(like: Node, value: torch.Tensor) -> object:
    fake = like.meta.get("val")
    mode = getattr(fake, "fake_mode", None)
    return mode.from_tensor(value, static_shapes=True) if mode is not None else value


def insert_scaling_multiply(
    gm: GraphModule, group: SmoothingGroup, inverse_scale: torch.Tensor, reason: str
) -> Node:
    """Insert ``mul(activation, 1/s)`` before the group's first consumer, make every consumer
    read it, and mark it kept float with ``reason``; returns the multiply.

    The multiply takes the first consumer's ``stack_trace`` and ``nn_module_stack`` (it
    belongs to that layer in reports) but no numeric debug handle: it has no counterpart in
    the float model the debugger compares against.
    """
    order = {node: index for index, node in enumerate(gm.graph.nodes)}
    first = min((c.node for c in group.consumers), key=order.__getitem__)
    activation = group.activation
    dtype = activation.meta["val"].dtype
    constant = add_buffer_constant(gm, SCALE_BUFFER_PREFIX, inverse_scale.to(dtype), first)
    constant.meta["val"] = _fake_value(activation, _constant_value(gm, constant))
    with gm.graph.inserting_before(first):
        multiply = gm.graph.create_node(
            "call_function",
            torch.ops.aten.mul.Tensor,
            (activation, constant),
            name=f"{activation.name}_smoothed",
        )
    for key in ("val", "tensor_meta"):
        if key in activation.meta:
            multiply.meta[key] = activation.meta[key]
    port_meta(first, multiply)
    for consumer in group.consumers:
        consumer.node.replace_input_with(activation, multiply)
    mark_kept_float(multiply, reason)
    return multiply


def _constant_value(gm: GraphModule, node: Node) -> torch.Tensor:
    value = module_constant(gm, node)
    assert value is not None
    return value


def _foldable_affine(gm: GraphModule, node: Node | None, channels: int) -> bool:
    """None (no affine: one is created) or a constant ``(channels,)`` that no node writes."""
    if node is None:
        return True
    value = module_constant(gm, node)
    return (
        value is not None
        and value.is_floating_point()
        and tuple(value.shape) == (channels,)
        and str(node.target) not in written_attributes(gm)
    )


def fold_into_norm(
    gm: GraphModule, group: SmoothingGroup, inverse_scale: torch.Tensor
) -> Node | None:
    """Fold ``1/s`` into the affine of the norm producing the activation and return the norm;
    None (nothing changed) unless that is exact: a layer / RMS norm over the last axis only,
    with constant (or absent) weight and bias, whose every reader is a consumer of the group."""
    norm = group.activation
    if norm.op != "call_function" or norm.target not in LAYER_NORM_OPS | RMS_NORM_OPS:
        return None
    if set(norm.users) != {c.node for c in group.consumers}:
        return None
    if list(argument(norm, "normalized_shape", ())) != [group.channels]:
        return None
    has_bias = norm.target in LAYER_NORM_OPS
    weight, bias = argument(norm, "weight"), argument(norm, "bias") if has_bias else None
    if not (
        _foldable_affine(gm, weight, group.channels) and _foldable_affine(gm, bias, group.channels)
    ):
        return None
    dtype = norm.meta["val"].dtype
    if weight is None:
        new_weight = inverse_scale.to(dtype)
        name = free_attribute_name(gm, f"{norm.name}_weight".replace(".", "_") + "_smoothed")
        gm.register_parameter(name, torch.nn.Parameter(new_weight, requires_grad=False))
        with gm.graph.inserting_before(norm):
            attr = gm.graph.get_attr(name)
        attr.meta["val"] = _fake_value(norm, new_weight)
        set_argument(norm, "weight", attr)
    else:
        _store(gm, weight, _scaled(_constant_value(gm, weight), inverse_scale, 0), norm, "weight")
    if bias is not None:
        _store(gm, bias, _scaled(_constant_value(gm, bias), inverse_scale, 0), norm, "bias")
    return norm


def _producing_linear(group: SmoothingGroup) -> Node | None:
    """The linear whose output, through ReLUs only, is the group's activation, when each value
    on the way is read by the next op alone and the activation by the group alone."""
    node = group.activation
    if set(node.users) != {c.node for c in group.consumers}:
        return None
    while node.op == "call_function" and node.target in RELU_OPS:
        source = node.args[0]
        if not isinstance(source, Node) or len(source.users) != 1:
            return None
        node = source
    if node.op != "call_function" or node.target not in LINEAR_OPS:
        return None
    return node


def fold_into_producing_linear(
    gm: GraphModule, group: SmoothingGroup, inverse_scale: torch.Tensor
) -> Node | None:
    """Fold ``1/s`` into the output rows (weight and bias) of the linear producing the
    activation through ReLUs and return that linear; None (nothing changed) unless that is
    exact (see :func:`_producing_linear`; constant weight and bias that no node writes)."""
    linear = _producing_linear(group)
    if linear is None:
        return None
    weight, bias = argument(linear, "weight"), argument(linear, "bias")
    written = written_attributes(gm)
    for node in (weight, bias):
        if node is not None and (module_constant(gm, node) is None or str(node.target) in written):
            return None
    if tuple(_constant_value(gm, weight).shape[:1]) != (group.channels,):
        return None
    _store(gm, weight, _scaled(_constant_value(gm, weight), inverse_scale, 0), linear, "weight")
    if bias is not None:
        _store(gm, bias, _scaled(_constant_value(gm, bias), inverse_scale, 0), linear, "bias")
    return linear
