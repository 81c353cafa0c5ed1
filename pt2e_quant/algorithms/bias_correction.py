"""Bias correction: fold the mean output shift that quantization causes into each layer's bias.

Rounding a layer's weights (and its input) rarely averages out: with ``y = x @ W.T + b``, the
converted layer computes ``q(x) @ q(W).T + b``, and ``E[q(x) @ q(W).T - x @ W.T]`` is a
per-output-channel offset that every later layer inherits. :func:`correct_bias` measures that
offset on calibration data and subtracts it from the bias, so the converted layer is right on
average. NNCF's fast bias correction is the reference; unlike it, the shift is measured
exactly on every batch (not through the layer's mean input, which ignores the activation
rounding's non-linearity and the padding of a convolution), and no relative-magnitude
threshold skips a layer whose bias is zero.

It runs on a calibrated prepared model, right before ``convert_pt2e``::

    prepared = prepare_pt2e(exported, quantizer)
    for batch in batches:
        prepared(*batch)
    report = correct_bias(prepared, batches)   # edits ``prepared``; returns what it did
    converted = convert_pt2e(prepared)

Layers: every ``conv1d`` / ``conv2d`` / ``conv3d`` / transposed convolution / ``convolution`` /
``linear`` call of the top-level graph whose weight reads an integer-quantizing observer. Its
input is rounded as its input observer says (no observer: the input stays float); the shift
is the mean of ``op(q(x), q(W), b) - op(x, W, b)`` over every axis but the output channel's,
where ``q`` is exactly what convert's q/dq ops will compute (:mod:`.simulated_observers`).

Two ways to take ``x`` (``sequential``):

- ``False`` (default, one pass per batch): ``x`` is the float model's input of the layer, so
  each layer's own rounding error is corrected, measured on the inputs it should see.
- ``True`` (empirical correction, one pass per batch *per layer*): ``x`` is the input the
  simulated quantized model feeds the layer, with the corrections of every earlier layer
  already applied, and the shift is measured against the float model's output, so a layer
  also absorbs the mean error that reaches it from upstream.

What changes: each corrected layer reads a new buffer ``_corrected_bias_<n>`` (``bias -
shift``) through a new ``get_attr``; the old bias tensor is never written (an exported
model's parameters share storage with the user's model). A bias quantized by a derived spec
(int32, ``scale = act_scale * w_scale``) keeps its observer, which now reads the corrected
bias, so the corrected value is what convert quantizes. A layer without a bias is left as is
unless ``add_missing_bias=True``, which gives it a zero bias first (a float bias: backends
such as XNNPACK keep biases in fp32). Observers are never called, so their statistics stay
those of calibration.

Left as is (listed in the report with the reason): weights that are not integer-quantized, a
bias computed by the graph rather than stored, a layer no batch reached with data (zero
elements), a shift that is not finite (a warning names the layer), observers that lower
themselves. Layers inside control-flow bodies (``cond``, ``scan``) are not visited.
QAT-prepared models are refused: QAT learns its biases with the fake-quantized weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.algorithms.prepared_runs import PreparedRun, observers_bypassed, run_batches
from pt2e_quant.algorithms.simulated_observers import (
    Simulator,
    UnsimulatedObserverError,
    quantizes,
    simulator_for,
)
from pt2e_quant.errors import QuantizationError, describe_node, warn_user
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.graph.aten_args import argument, module_constant, set_argument
from pt2e_quant.graph.constants import add_buffer_constant
from pt2e_quant.ops.families import (
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    CONVOLUTION_OPS,
    LINEAR_OPS,
)
from pt2e_quant.passes.driver import finalize_graphs, run_pass
from pt2e_quant.pipeline.calibration import CalibrationError, as_batch

__all__ = [
    "BiasCorrectionReport",
    "BiasCorrectionWarning",
    "LayerBiasCorrection",
    "correct_bias",
]

CORRECTED_BIAS_PREFIX = "_corrected_bias_"
_API = "correct_bias"
_CONV_LIKE_OPS = CONV_OPS | CONV_TRANSPOSE_OPS | CONVOLUTION_OPS


class BiasCorrectionWarning(UserWarning):
    """A layer's measured shift was not finite, so its bias was left as is."""


@dataclass(frozen=True)
class LayerBiasCorrection:
    """What bias correction did to one conv / linear node.

    ``shift`` is the measured per-output-channel mean of (quantized - float) output before
    correction (None when it was not measured); ``bias_attribute`` names the new buffer the
    layer reads when ``corrected``; otherwise ``reason`` says why the layer was left as is.
    """

    node: str
    op: str
    corrected: bool
    reason: str = ""
    shift: torch.Tensor | None = field(default=None, compare=False)
    bias_attribute: str | None = None

    @property
    def max_abs_shift(self) -> float | None:
        if self.shift is None or self.shift.numel() == 0:
            return None
        return float(self.shift.abs().max())


class BiasCorrectionReport(list):
    """One :class:`LayerBiasCorrection` per conv / linear node of the graph, in graph order."""

    @property
    def corrected(self) -> list[LayerBiasCorrection]:
        return [layer for layer in self if layer.corrected]

    @property
    def skipped(self) -> list[LayerBiasCorrection]:
        return [layer for layer in self if not layer.corrected]

    def to_text(self) -> str:
        lines = [f"bias correction: {len(self.corrected)} of {len(self)} layers corrected"]
        for layer in self:
            shift = layer.max_abs_shift
            measured = "" if shift is None else f"max |shift| {shift:.3g}"
            status = "corrected" if layer.corrected else f"left as is: {layer.reason}"
            lines.append(f"  {layer.node} ({layer.op}) {measured} {status}".rstrip())
        return "\n".join(lines)


# ------------------------------------------------------------------------------ the layers


@dataclass
class _Layer:
    """A conv / linear node to correct, its simulated roundings and its running sums."""

    node: Node
    weight: Simulator
    activation: Simulator
    bias: Node | None  # the get_attr node holding the stored bias; None: no bias yet
    bias_reader: Node  # the node reading ``bias`` (the layer, or a derived bias observer)
    sums: torch.Tensor | None = None  # float64 per-channel sums of the measured quantity
    count: int = 0  # values summed per channel
    dtype: torch.dtype = torch.float32  # the layer's output dtype, for a bias it lacks

    def add(self, value: torch.Tensor, weight: torch.Tensor) -> None:
        """Add the per-channel sums of ``value`` (the layer's output layout) to the totals."""
        self.dtype = value.dtype
        if value.numel() == 0:
            return
        axis = _channel_axis(self.node, value, weight)
        dims = [d for d in range(value.dim()) if d != axis]
        sums = value.sum(dim=dims, dtype=torch.float64) if dims else value.double()
        self.sums = sums if self.sums is None else self.sums + sums
        self.count += value.numel() // value.shape[axis]

    def mean(self) -> torch.Tensor | None:
        return None if self.sums is None or self.count == 0 else self.sums / self.count

    def reset(self) -> None:
        self.sums, self.count = None, 0


def _channel_axis(node: Node, output: torch.Tensor, weight: torch.Tensor) -> int:
    """The output-channel axis: last for linear, 1 for a batched convolution, 0 unbatched."""
    if node.target in LINEAR_OPS:
        return output.dim() - 1
    return 1 if output.dim() == weight.dim() else 0


def _observer_of(gm: GraphModule, value: Any) -> torch.nn.Module | None:
    if isinstance(value, Node) and value.op == "call_module":
        module = gm.get_submodule(str(value.target))
        if is_observer_or_fake_quant(module):
            return module
    return None


def _stored_bias(
    gm: GraphModule, node: Node, add_missing_bias: bool
) -> tuple[Node | None, Node] | str:
    """(bias get_attr or None, the node reading it), or why the bias cannot be corrected."""
    bias = argument(node, "bias")
    if bias is None:
        return (None, node) if add_missing_bias else "no bias (add_missing_bias=False)"
    reader = node
    observer = _observer_of(gm, bias)
    if observer is not None:
        if len(bias.users) > 1:
            return f"its bias observer '{bias.name}' is shared with other layers"
        reader, bias = bias, bias.args[0]
    if module_constant(gm, bias) is None:
        return f"its bias is computed by {describe_node(bias)}, not a stored tensor"
    return bias, reader


def _find_layers(
    gm: GraphModule, add_missing_bias: bool
) -> tuple[list[_Layer], dict[Node, LayerBiasCorrection]]:
    """The correctable layers, and a report entry for every conv / linear left as is."""
    layers: list[_Layer] = []
    left: dict[Node, LayerBiasCorrection] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _CONV_LIKE_OPS | LINEAR_OPS:
            continue
        reason = ""
        weight_observer = _observer_of(gm, node.args[1])
        if weight_observer is None or not quantizes(weight_observer):
            reason = "its weight is not integer-quantized"
        bias = _stored_bias(gm, node, add_missing_bias) if not reason else reason
        if isinstance(bias, str):
            reason = bias
        if not reason:
            try:
                weight = simulator_for(weight_observer)
                input_observer = _observer_of(gm, node.args[0])
                activation = simulator_for(input_observer) if input_observer else _same
            except UnsimulatedObserverError as error:
                reason = str(error)
        if reason:
            left[node] = LayerBiasCorrection(node.name, _op_name(node), False, reason)
        else:
            layers.append(_Layer(node, weight, activation, bias[0], bias[1]))
    return layers, left


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


def _op_name(node: Node) -> str:
    return str(node.target)  # "aten.conv2d.default"


# --------------------------------------------------------------- measuring the shifts


def _measure_local_shifts(gm: GraphModule, layers: list[_Layer], batches: list[tuple]) -> None:
    """One float pass per batch: each layer sums ``op(q(x), q(W), b) - op(x, W, b)``."""
    by_node = {layer.node: layer for layer in layers}

    def on_node(node: Node, args: tuple, kwargs: dict, result: torch.Tensor) -> None:
        layer = by_node[node]
        x, weight, *rest = args
        rounded = node.target(layer.activation(x), layer.weight(weight), *rest, **kwargs)
        layer.add(rounded - result, weight)

    run_batches(PreparedRun(gm, by_node, on_node), batches, _API)


def _measure_shifts_sequentially(
    gm: GraphModule, layers: list[_Layer], batches: list[tuple], report: dict
) -> None:
    """The float pass sums each layer's output; then, layer by layer, the simulated model
    (earlier corrections applied) runs up to the layer, and the shift is the difference of
    the two means. Each layer is corrected before the next is measured."""
    by_node = {layer.node: layer for layer in layers}

    def sum_output(node: Node, args: tuple, kwargs: dict, result: torch.Tensor) -> None:
        by_node[node].add(result, args[1])

    run_batches(PreparedRun(gm, by_node, sum_output), batches, _API)
    float_means = {layer.node: layer.mean() for layer in layers}
    for layer in layers:
        layer.reset()
        run = PreparedRun(gm, [layer.node], sum_output, simulate=True, stop_after=layer.node)
        run_batches(run, batches, _API)
        quantized_mean, float_mean = layer.mean(), float_means[layer.node]
        shift = None if quantized_mean is None else quantized_mean - float_mean
        report[layer.node] = _apply_shift(gm, layer, shift)


# ------------------------------------------------------------------- rewriting the biases


def _apply_shift(gm: GraphModule, layer: _Layer, shift: torch.Tensor | None) -> LayerBiasCorrection:
    """Point the layer at a new bias ``bias - shift``, or say why it was left as is."""
    node = layer.node
    if shift is None:
        return LayerBiasCorrection(node.name, _op_name(node), False, "no batch reached it")
    if not bool(torch.isfinite(shift).all()):
        warn_user(
            f"bias correction: the measured output shift of {describe_node(node)} is not "
            "finite (NaN or Inf in the calibration batches or in the layer's output); its bias "
            "is left as is. Check the batches passed as `batches`.",
            BiasCorrectionWarning,
        )
        reason = "its measured shift is not finite"
        return LayerBiasCorrection(node.name, _op_name(node), False, reason, shift.float())
    old = module_constant(gm, layer.bias) if layer.bias is not None else None
    if old is None:
        old = torch.zeros(shift.shape, dtype=layer.dtype, device=shift.device)
    corrected = (old.detach().double() - shift.to(old.device)).to(old.dtype)
    new_bias = add_buffer_constant(gm, CORRECTED_BIAS_PREFIX, corrected, layer.bias_reader)
    name = str(new_bias.target)
    run_pass(gm, lambda _: _repoint(layer, new_bias), deferred=True)
    layer.bias = new_bias
    return LayerBiasCorrection(node.name, _op_name(node), True, "", shift.float(), name)


def _repoint(layer: _Layer, new_bias: Node) -> bool:
    """Make the bias reader read ``new_bias``; the old get_attr is removed once unread."""
    if layer.bias is None:
        set_argument(layer.node, "bias", new_bias)
    else:
        layer.bias_reader.replace_input_with(layer.bias, new_bias)
    return True


# ----------------------------------------------------------------------------- the entry


def _check_prepared(prepared: Any) -> None:
    if not isinstance(prepared, GraphModule):
        raise TypeError(
            f"correct_bias: prepared must be the GraphModule prepare_pt2e returned, got "
            f"{type(prepared).__name__}"
        )
    for name, module in prepared.named_modules():
        if is_observer_or_fake_quant(module) and hasattr(module, "fake_quant_enabled"):
            raise QuantizationError(
                f"correct_bias: '{name}' is a fake-quantize module ({type(module).__name__}): "
                "the model was prepared for QAT, which learns its biases with the quantized "
                "weights. Bias correction is a post-training step: use it on a prepare_pt2e "
                "model after calibration."
            )


def _as_batches(batches: Iterable[Any]) -> list[tuple]:
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Iterable):
        raise TypeError(
            f"correct_bias: batches must be an iterable of input tuples, got "
            f"{type(batches).__name__}"
        )
    listed = [as_batch(item) for item in batches]
    if not listed:
        raise CalibrationError(
            "correct_bias: batches is empty; pass the calibration batches (input tuples) the "
            "shift is measured on"
        )
    return listed


def correct_bias(
    prepared: GraphModule,
    batches: Iterable[Any],
    *,
    sequential: bool = False,
    add_missing_bias: bool = False,
) -> BiasCorrectionReport:
    """Fold each quantized conv / linear's mean output shift into its bias, in place.

    ``prepared`` is a calibrated ``prepare_pt2e`` model, about to go to ``convert_pt2e``;
    ``batches`` are input tuples (a lone tensor is a 1-tuple), typically the calibration data.
    The graph is edited (new bias buffers, repointed ``get_attr`` nodes); no existing tensor
    and no observer statistic changes. See the module docstring for ``sequential`` and
    ``add_missing_bias``. Returns one entry per conv / linear node, corrected or not.

    Raises ``CalibrationError`` (a ``ValueError``) naming ``batches`` when it is empty and
    ``QuantizationError`` for a QAT-prepared model.
    """
    _check_prepared(prepared)
    listed = _as_batches(batches)
    layers, left = _find_layers(prepared, add_missing_bias)
    done: dict[Node, LayerBiasCorrection] = dict(left)
    if layers:
        with observers_bypassed(prepared):
            if sequential:
                _measure_shifts_sequentially(prepared, layers, listed, done)
            else:
                _measure_local_shifts(prepared, layers, listed)
                for layer in layers:
                    done[layer.node] = _apply_shift(prepared, layer, layer.mean())
        finalize_graphs(prepared)
    order = {node: index for index, node in enumerate(prepared.graph.nodes)}
    return BiasCorrectionReport(done[node] for node in sorted(done, key=order.__getitem__))
