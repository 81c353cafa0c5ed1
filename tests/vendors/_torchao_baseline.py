"""The torchao baseline every vendor test compares against: export, prepare, calibrate, convert.

One recipe for all vendors, so a difference between two vendor tests is never a difference in
how the model was captured or calibrated:

* ``torch.export.export(...).module(check_guards=False)``: the Arm TOSA and Cortex-M quantizers
  run ExecuTorch passes over the graph in ``transform_for_annotation``, and those reject the
  ``_guards_fn`` call_module that ``.module()`` inserts by default ("call_module is not
  supported"). The other vendors do not care, so every test exports the same way.
* calibration on the model's example input plus three seeded random batches of the same shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer import Quantizer

CALIBRATION_BATCHES = 3


def torchao_ptq(
    model: nn.Module,
    quantizer: Quantizer,
    *,
    channels_last: bool = False,
    fold_quantize: bool = True,
) -> tuple[GraphModule, nn.Module, tuple[Tensor, ...]]:
    """Quantize ``model`` (a zoo model with ``example_inputs()``) with torchao's prepare/convert.

    Returns the converted module, the float model it came from (in eval mode, channels-last if
    asked) and the example inputs, in the layout the converted module was exported with.
    """
    torch.manual_seed(0)
    model = model.eval()
    inputs = model.example_inputs()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.to(memory_format=torch.channels_last) for x in inputs)
    exported = torch.export.export(model, inputs).module(check_guards=False)
    prepared = prepare_pt2e(exported, quantizer)
    prepared(*inputs)
    for _ in range(CALIBRATION_BATCHES):
        prepared(*(torch.randn_like(x) for x in inputs))
    return convert_pt2e(prepared, fold_quantize=fold_quantize), model, inputs


def output_step(converted: GraphModule) -> float:
    """The quantization step of the model's single output: the scale of its dequantize."""
    (output,) = converted.graph.output_node().args[0]
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    if not (isinstance(output, Node) and output.target == dequantize):
        raise AssertionError(f"the output comes from {output}, not from a dequantize_per_tensor")
    return float(output.args[1])


def quantize_dtypes(converted: GraphModule) -> set[torch.dtype]:
    """The dtypes activations are quantized to (the last argument of every quantize_per_tensor)."""
    target = torch.ops.quantized_decomposed.quantize_per_tensor.default
    return {node.args[5] for node in converted.graph.nodes if node.target == target}


def weight_sources(converted: GraphModule) -> list[Node]:
    """The node feeding the weight argument of every conv2d and linear, in graph order."""
    compute = {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default}
    return [node.args[1] for node in converted.graph.nodes if node.target in compute]
