"""Rewrite conv / linear + batch norm for quantization-aware training.

After training, convert folds each batch norm into the layer before it, so the weight that
gets quantized is ``w * s`` with ``s = gamma / sqrt(running_var + eps)``. Training must
fake-quantize that same scaled weight, while the batch norm keeps training (batch statistics
in the forward pass, running statistics updated). The standard simulation (Krishnamoorthi
2018; ``nniqat.ConvBn2d._forward_approximate``) does both::

    conv(x, w, b) -> bn             becomes

    s = gamma / sqrt(running_var + eps)
    y = conv(x, fake_quant(w * s), zeros_like(b)) / s + b
    y -> bn                         (same momentum and eps, in training mode)

Dividing by ``s`` undoes the scaling, so the batch norm sees the float layer's output up to
the weight's quantization error. The batch norm trains even if the model was exported in eval
mode, as with torchao (whose quick start exports in eval mode before ``prepare_qat_pt2e``).
The inserted ops, and their order, are the ones torchao traces, so fake-quant statistics (and
so the final qparams) come out bit-identical. So is where they go: torchao's subgraph rewrite
replaces conv -> bn by inserting the whole simulation, layer and batch norm included, right
before the batch norm's first reader, so anything export placed between the layer and that
reader (the batch norm's ``num_batches_tracked += 1``, an independent branch) ends up before
the layer. Ours moves the layer and the batch norm there too, rewriting pairs in torchao's
order, so the prepared graph, and the converted one, list their ops as torchao's do. Unlike
torchao, the batch norm keeps its own ``eps`` and ``momentum`` and the layer's literal
arguments are untouched; linear + BatchNorm1d (2-D outputs) and grouped transposed convs are
rewritten too.

This runs after annotation: the layer's weight (and bias) annotation moves to the scaled
weight (and zero bias), where the fake-quantize module then goes. A layer whose own output
the quantizer observes is left alone with a warning: that observer would sit between the layer
and the batch norm, and no fold at convert could keep its meaning. Annotate conv-bn as one
pattern (output spec on the batch norm, or on the activation after it) instead. So is a batch
norm with a zero gamma (torchvision's ``zero_init_residual``): the division by ``s`` is 0 / 0
there, which torchao trains into NaN weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.contract.specs import (
    DerivedQuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.graph.aten_args import argument, set_argument
from pt2e_quant.graph.conv_batch_norm import (
    BATCH_NORMS,
    batch_norm_constants,
    first_reader,
    is_foldable_layer,
    is_transposed,
    torchao_rewrite_rank,
    why_not_foldable,
)

__all__ = ["simulate_batch_norm_folding", "BatchNormNotFusedWarning"]

_aten = torch.ops.aten

#: meta keys the inserted nodes take from the layer, so scoping and error messages still
#: place them in the user's module
_LAYER_META = ("nn_module_stack", "stack_trace")


class BatchNormNotFusedWarning(UserWarning):
    """A conv / linear + batch norm pair is trained without the QAT folding simulation."""


def _why_not_simulated(gm: GraphModule, layer: Node, batch_norm: Node) -> str | None:
    if batch_norm.target is not _aten.batch_norm.default:
        return f"only aten.batch_norm is rewritten, not {batch_norm.target}"
    reason = why_not_foldable(gm, layer, batch_norm)
    if reason is not None:
        return reason
    gamma = batch_norm_constants(gm, batch_norm).gamma  # foldable: the constants exist
    if gamma is not None and bool((gamma == 0).any()):
        zeros = torch.nonzero(gamma == 0).flatten().tolist()
        return (
            f"its weight (gamma) is exactly 0 in channel(s) {zeros[:8]}"
            f"{' ...' if len(zeros) > 8 else ''} (zero-initialised residual branches), and the "
            "simulation divides the layer's output by gamma / std, which would train NaN "
            "weights there; start QAT from nonzero gamma to fuse it"
        )
    annotation = get_annotation(layer)
    if annotation is not None and annotation.output_qspec is not None:
        return (
            f"the quantizer observes the output of {describe_node(layer)} before the batch "
            "norm; annotate the pair as one pattern (output spec on the batch norm or the "
            "activation after it)"
        )
    return None


class _Builder:
    """Inserts nodes before an anchor, giving each the layer's metadata and a fake value."""

    def __init__(self, gm: GraphModule, layer: Node) -> None:
        self.graph = gm.graph
        self.layer = layer
        fake = layer.meta.get("val")
        self.fake_mode = getattr(fake, "fake_mode", None)

    def call(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Node:
        node = self.graph.call_function(target, args, kwargs)
        for key in _LAYER_META:
            if key in self.layer.meta:
                node.meta[key] = self.layer.meta[key]
        value = self._fake_value(target, args, kwargs)
        if value is not None:
            node.meta["val"] = value
        return node

    def _fake_value(self, target: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self.fake_mode is None:
            return None
        values = []
        for arg in args:
            if isinstance(arg, Node):
                if "val" not in arg.meta:
                    return None
                arg = arg.meta["val"]
            values.append(arg)
        with self.fake_mode:
            return target(*values, **kwargs)


def _scale_factor(b: _Builder, batch_norm: Node) -> Node:
    """``gamma / sqrt(running_var + eps)`` (``1 / sqrt(...)`` without affine parameters)."""
    var = argument(batch_norm, "running_var")
    std = b.call(_aten.sqrt.default, b.call(_aten.add.Tensor, var, argument(batch_norm, "eps")))
    gamma = argument(batch_norm, "weight")
    if gamma is None:
        return b.call(_aten.reciprocal.default, std)
    return b.call(_aten.div.Tensor, gamma, std)


def _weight_scale(b: _Builder, scale: Node, weight: Node) -> Node:
    """``scale`` shaped to multiply the weight along the layer's output channels."""
    ndim = weight.meta["val"].dim()
    if not is_transposed(b.layer):
        return b.call(_aten.reshape.default, scale, [-1] + [1] * (ndim - 1))
    groups = int(argument(b.layer, "groups", 1))
    if groups == 1:
        return b.call(_aten.reshape.default, scale, [1, -1] + [1] * (ndim - 2))
    # (in, out / groups, k...) weight: row block g holds the input channels of group g, and
    # column j of that block feeds output channel g * (out / groups) + j.
    in_channels, out_per_group = weight.meta["val"].shape[:2]
    per_group = b.call(_aten.reshape.default, scale, [groups, out_per_group])
    rows = b.call(_aten.repeat_interleave.self_int, per_group, in_channels // groups, 0)
    return b.call(_aten.reshape.default, rows, [in_channels, out_per_group] + [1] * (ndim - 2))


def _rewrite(gm: GraphModule, layer: Node, batch_norm: Node) -> dict[Node, Node]:
    """Replace ``layer -> batch_norm`` by the simulation, placed right before the batch norm's
    first reader (layer and batch norm move there); returns {replaced input: its stand-in}.

    Moving both later is safe: the layer's only reader is the batch norm, and the batch norm
    reads nothing that export computed after it."""
    b = _Builder(gm, layer)
    weight, bias = argument(layer, "weight"), argument(layer, "bias")
    replaced: dict[Node, Node] = {}
    anchor = first_reader(batch_norm)
    with gm.graph.inserting_before(anchor):
        scale = _scale_factor(b, batch_norm)
        scaled_weight = b.call(_aten.mul.Tensor, weight, _weight_scale(b, scale, weight))
        set_argument(layer, "weight", scaled_weight)
        replaced[weight] = scaled_weight
        if bias is not None:
            zero_bias = b.call(
                _aten.zeros_like.default, bias, dtype=layer.meta["val"].dtype, pin_memory=False
            )
            set_argument(layer, "bias", zero_bias)
            replaced[bias] = zero_bias
    anchor.prepend(layer)
    out_shape = [1, -1] + [1] * (layer.meta["val"].dim() - 2)
    with gm.graph.inserting_before(anchor):
        restored = b.call(_aten.div.Tensor, layer, b.call(_aten.reshape.default, scale, out_shape))
        if bias is not None:
            restored = b.call(
                _aten.add.Tensor, restored, b.call(_aten.reshape.default, bias, out_shape)
            )
    set_argument(batch_norm, "input", restored)
    anchor.prepend(batch_norm)
    # QAT trains the batch norm it folds, even one exported in eval mode (as torchao's
    # rewrite does); move_exported_model_to_eval freezes it when that is wanted.
    set_argument(batch_norm, "training", True)
    return replaced


def _moved_spec(
    spec: QuantizationSpecBase | None, edges: dict[tuple[Node, Node], tuple[Node, Node]]
) -> QuantizationSpecBase | None:
    def moved(value: Any) -> Any:
        return edges.get(value, value) if isinstance(value, tuple) else value

    if isinstance(spec, SharedQuantizationSpec):
        edge = moved(spec.edge_or_node)
        return spec if edge is spec.edge_or_node else SharedQuantizationSpec(edge)
    if isinstance(spec, DerivedQuantizationSpec):
        sources = [moved(s) for s in spec.derived_from]
        if all(a is b for a, b in zip(sources, spec.derived_from, strict=True)):
            return spec
        return dataclasses.replace(spec, derived_from=sources)
    return spec


def _move_annotations(gm: GraphModule, moves: dict[Node, dict[Node, Node]]) -> None:
    """Key the layers' weight / bias specs by their stand-ins, and re-point specs elsewhere
    that share with or derive from those edges (e.g. a bias derived from the weight)."""
    edges = {}
    for layer, replaced in moves.items():
        edges.update({(old, layer): (new, layer) for old, new in replaced.items()})
        annotation = get_annotation(layer)
        if annotation is not None:
            annotation.input_qspec_map = {
                replaced.get(node, node): spec for node, spec in annotation.input_qspec_map.items()
            }
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None:
            continue
        annotation.input_qspec_map = {
            key: _moved_spec(spec, edges) for key, spec in annotation.input_qspec_map.items()
        }
        annotation.output_qspec = _moved_spec(annotation.output_qspec, edges)


def simulate_batch_norm_folding(gm: GraphModule) -> bool:
    """Rewrite every conv / linear + batch norm pair of ``gm`` into the QAT simulation."""
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in BATCH_NORMS:
            continue
        layer = argument(node, "input")
        if not is_foldable_layer(layer):
            continue
        reason = _why_not_simulated(gm, layer, node)
        if reason is None:
            pairs.append((layer, node))
        else:
            warn_user(
                f"{describe_node(node)} after {describe_node(layer)} is not fused for "
                f"quantization-aware training: {reason}. It trains as a separate float op and "
                "is not folded at convert.",
                BatchNormNotFusedWarning,
            )
    pairs.sort(key=lambda pair: torchao_rewrite_rank(pair[0]))
    moves = {layer: _rewrite(gm, layer, batch_norm) for layer, batch_norm in pairs}
    if moves:
        _move_annotations(gm, moves)
    return bool(moves)
