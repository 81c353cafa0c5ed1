"""Fold the batch norms of a quantization-aware-trained model into their layers, at convert.

``simulate_batch_norm_folding`` trained each conv / linear + batch norm as::

    s = gamma / sqrt(running_var + eps)
    y = bn(layer(x, dq(q(w * s)), zeros_like(b)) / s + b)

Deployment wants the plain layer ``layer(x, dq(q(w')), b')`` with the batch norm folded in
(``w' = w * s``, ``b' = (b - mean) * s + beta``, from the final running statistics). This pass
recognises the simulation by its structure, writes ``w'`` where ``w * s`` was computed (so the
weight's quantize node, keeping the scale its fake-quant learned, now quantizes ``w'`` and is
folded into an integer constant by ``fold_quantized_constants``), writes ``b'`` in place of the
zero bias, and routes the batch norm's readers to the layer. The result has the same q/dq
structure as post-training quantization of the same model, in torchao's QAT node order: the
weight's q / dq and the layer go right before the batch norm's first reader (after the
input's quantize / dequantize), where torchao's convert rewrite re-inserts them.

It is a single scan matching a fixed structure, not a pattern re-trace: torchao re-exports its
replacement patterns for every combination of options, which is what makes its convert slow.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.graph.aten_args import argument, module_constant, set_argument
from pt2e_quant.graph.conv_batch_norm import (
    BatchNormConstants,
    batch_norm_constants,
    drop_batch_counters,
    first_reader,
    folded_weight_and_bias,
    is_foldable_layer,
    readers_by_target,
    store_constant,
    torchao_rewrite_rank,
)
from pt2e_quant.graph.node_meta import copy_debug_handle
from pt2e_quant.ops import qdq_ops

__all__ = ["fold_simulated_batch_norm"]

_aten = torch.ops.aten


@dataclass
class _Simulation:
    """The nodes of one simulated conv-bn that folding rewrites."""

    layer: Node
    batch_norm: Node
    scaled_weight: Node  # w * s, possibly behind the weight's q / dq
    weight: Node  # get_attr of w
    zero_bias: Node | None  # zeros_like(b), possibly behind q / dq
    bias_reshape: Node | None  # reshape(b) added back after the layer
    bias: Node | None  # get_attr of b
    constants: BatchNormConstants


def _is_call(node: object, target: object) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target is target


def _skip_quantization(node: object) -> object:
    """Walk from a layer input back through quantize / dequantize ops to the float value."""
    while qdq_ops.is_quantize(node) or qdq_ops.is_dequantize(node):
        node = node.args[0]  # type: ignore[union-attr]
    return node


def _is_scale_factor(node: object, batch_norm: Node) -> bool:
    """``gamma / sqrt(var + eps)`` (or ``1 / sqrt(...)``) over this batch norm's statistics."""
    if _is_call(node, _aten.div.Tensor):
        gamma, std = node.args  # type: ignore[union-attr]
        if gamma is not argument(batch_norm, "weight"):
            return False
    elif _is_call(node, _aten.reciprocal.default):
        std = node.args[0]  # type: ignore[union-attr]
    else:
        return False
    if not _is_call(std, _aten.sqrt.default):
        return False
    shifted = std.args[0]
    return _is_call(shifted, _aten.add.Tensor) and shifted.args[0] is argument(
        batch_norm, "running_var"
    )


def _match(gm: GraphModule, batch_norm: Node) -> _Simulation | None:
    restored = argument(batch_norm, "input")
    bias_reshape = None
    if _is_call(restored, _aten.add.Tensor):
        restored, bias_reshape = restored.args
        if not _is_call(bias_reshape, _aten.reshape.default):
            return None
    if not _is_call(restored, _aten.div.Tensor):
        return None
    layer, scale_shaped = restored.args
    if not is_foldable_layer(layer) or not _is_call(scale_shaped, _aten.reshape.default):
        return None
    if not _is_scale_factor(scale_shaped.args[0], batch_norm):
        return None
    scaled_weight = _skip_quantization(argument(layer, "weight"))
    if not _is_call(scaled_weight, _aten.mul.Tensor):
        return None
    weight = scaled_weight.args[0]
    if module_constant(gm, weight) is None:
        return None
    bias = bias_reshape.args[0] if bias_reshape is not None else None
    zero_bias = _skip_quantization(argument(layer, "bias"))
    if (zero_bias is None) != (bias is None):
        return None
    if zero_bias is not None and not (
        _is_call(zero_bias, _aten.zeros_like.default) and zero_bias.args[0] is bias
    ):
        return None
    if bias is not None and module_constant(gm, bias) is None:
        return None
    constants = batch_norm_constants(gm, batch_norm)
    if constants is None:
        return None
    return _Simulation(
        layer, batch_norm, scaled_weight, weight, zero_bias, bias_reshape, bias, constants
    )


def _move_quantization_before(layer: Node, name: str) -> None:
    """Place the q / dq of the layer's ``name`` input (and their qparam constants) right
    before the layer, as torchao's convert rewrite re-inserts them, unless another reader
    needs them where they are."""
    chain = []
    node = argument(layer, name)
    while qdq_ops.is_quantize(node) or qdq_ops.is_dequantize(node):
        chain.append(node)
        node = node.args[0]
    placed = set(chain)
    if any(not set(node.users) <= placed | {layer} for node in chain):
        return
    for node in reversed(chain):
        for arg in node.args[1:]:
            # a get_attr has no inputs: moving it later, still before all its readers, is safe
            movable = isinstance(arg, Node) and arg.op == "get_attr" and set(arg.users) <= placed
            if movable and arg not in placed:
                layer.prepend(arg)
                placed.add(arg)
        layer.prepend(node)


def _fold(gm: GraphModule, s: _Simulation, readers: dict[str, list[Node]]) -> None:
    """Fold one simulation, placing the layer where torchao's convert does.

    torchao re-inserts weight q / dq, bias q / dq and layer right before the batch norm's first
    reader, so the input's quantize / dequantize come before the weight's dequantize (unlike
    post-training quantization, where a weight's dequantize sits next to the weight). Ours
    moves them there; until dead-code removal erases the simulation ops, its division still
    reads the moved layer from an earlier position.
    """
    first_reader(s.batch_norm).prepend(s.layer)
    weight, bias = folded_weight_and_bias(
        module_constant(gm, s.weight),  # type: ignore[arg-type]
        module_constant(gm, s.bias),
        s.constants,
        s.layer,
    )
    stored_weight = store_constant(
        gm, weight, template=s.weight, owners={s.scaled_weight}, readers=readers, before=s.layer
    )
    s.scaled_weight.replace_all_uses_with(stored_weight)
    _move_quantization_before(s.layer, "weight")
    bias_owners = {n for n in (s.zero_bias, s.bias_reshape) if n is not None}
    stored_bias = store_constant(
        gm,
        bias,
        template=s.bias,
        owners=bias_owners,
        readers=readers,
        before=s.layer,
        fake_like=argument(s.batch_norm, "running_mean"),
    )
    if s.zero_bias is not None:
        s.zero_bias.replace_all_uses_with(stored_bias)
        _move_quantization_before(s.layer, "bias")
    else:
        set_argument(s.layer, "bias", stored_bias)
    s.batch_norm.replace_all_uses_with(s.layer)
    # As in post-training folding: the layer now stands for the batch norm's output.
    copy_debug_handle(s.batch_norm, s.layer)


def fold_simulated_batch_norm(gm: GraphModule) -> bool:
    """Fold every simulated conv / linear + batch norm of ``gm`` (not its sub-graphs)."""
    simulations = []
    for node in gm.graph.nodes:
        if _is_call(node, _aten.batch_norm.default):
            simulation = _match(gm, node)
            if simulation is not None:
                simulations.append(simulation)
    if not simulations:
        return False
    readers = readers_by_target(gm)
    simulations.sort(key=lambda s: torchao_rewrite_rank(s.layer))  # stable: node order
    for simulation in simulations:
        _fold(gm, simulation, readers)
    drop_batch_counters(gm, [s.batch_norm for s in simulations])
    return True
