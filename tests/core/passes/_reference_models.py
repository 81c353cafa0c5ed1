"""Tiny models and helpers shared by the rewrite_to_reference tests.

Each helper calibrates a tiny model once and converts it twice, with and without
``use_reference_representation``, so tests compare the reference graph with the q/dq graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.contract.annotation import annotate_input, annotate_output, mark_annotated
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import (
    FunctionQuantizer,
    int8_specs,
)

aten = torch.ops.aten
Q = qdq_ops.QUANTIZE_PER_TENSOR
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR
Q_PC = qdq_ops.QUANTIZE_PER_CHANNEL
DQ_PC = qdq_ops.DEQUANTIZE_PER_CHANNEL
NO_STATIC_QDQ = {Q: 0, DQ: 0, Q_PC: 0, DQ_PC: 0}

WEIGHTED_OPS = (aten.conv1d.default, aten.conv2d.default, aten.linear.default)


# ------------------------------------------------------------------------------------------
# tiny models
# ------------------------------------------------------------------------------------------


class Conv(nn.Module):
    """x -> conv2d(16 -> 32, 3x3, stride 2, padding 1, dilation 2, groups 2) [-> relu]"""

    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, dilation=2, groups=2)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.relu(y) if self.relu else y


class LinearRelu(nn.Module):
    """x (batch, tokens, 8) -> linear(8 -> 5) -> relu"""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


class Add(nn.Module):
    """(a, b) -> a + b [-> relu]"""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = a + b
        return torch.relu(y) if self.relu else y


class MaxPool(nn.Module):
    """x -> max_pool2d(3, stride 2, padding 1)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, 3, stride=2, padding=1)


class Net(nn.Module):
    r"""Every pattern once:

    x -> conv -> relu -> max_pool2d -> + -> flatten -> linear
     \--> conv(1x1, stride 2) -------/
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.skip = nn.Conv2d(3, 4, 1, stride=2)
        self.linear = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.linear(torch.flatten(y + self.skip(x), 1))


# ------------------------------------------------------------------------------------------
# quantizer and helpers
# ------------------------------------------------------------------------------------------


def annotate_fused(
    activation: QuantizationSpec,
    weight: QuantizationSpec,
    relu_output: QuantizationSpecBase | None = None,
):
    """conv / linear (weight on arg 1) and add get quantized inputs and their output quantized
    after a following relu if there is one (with ``relu_output`` if given); max_pool2d's output
    shares its input's qparams."""

    def annotate(gm: GraphModule) -> None:
        for node in list(gm.graph.nodes):
            if node.op != "call_function":
                continue
            if node.target is aten.max_pool2d.default:
                annotate_input(node, node.args[0], activation)
                annotate_output(node, SharedQuantizationSpec((node.args[0], node)))
                mark_annotated([node])
                continue
            if node.target in WEIGHTED_OPS:
                annotate_input(node, node.args[0], activation)
                annotate_input(node, node.args[1], weight)
            elif node.target is aten.add.Tensor:
                for arg in node.args[:2]:
                    annotate_input(node, arg, activation)
            else:
                continue
            users = list(node.users)
            relu = users[0] if len(users) == 1 and users[0].target is aten.relu.default else None
            if relu is None:
                annotate_output(node, activation)
            else:
                annotate_output(relu, relu_output or activation)
            mark_annotated([node] if relu is None else [node, relu])

    return annotate


def reference_quantizer(per_channel: bool = True) -> Quantizer:
    return FunctionQuantizer(annotate_fused(*int8_specs(our_observer, per_channel=per_channel)))


def calibrated(model: nn.Module, inputs: tuple, quantizer: Quantizer) -> GraphModule:
    torch.manual_seed(0)
    prepared = prepare_pt2e(torch.export.export(model.eval(), inputs).module(), quantizer)
    for _ in range(3):
        prepared(*(torch.randn_like(t) * 2 for t in inputs))
    prepared(*inputs)
    return prepared


def convert_both(
    model: nn.Module, inputs: tuple, quantizer: Quantizer, fold_quantize: bool = True
) -> tuple[GraphModule, GraphModule]:
    """(reference, q/dq) conversions of one calibrated model."""
    prepared = calibrated(model, inputs, quantizer)
    reference = convert_pt2e(
        copy.deepcopy(prepared), use_reference_representation=True, fold_quantize=fold_quantize
    )
    return reference, convert_pt2e(prepared, fold_quantize=fold_quantize)


def output_step(plain: GraphModule) -> float:
    """The scale of the dequantize that produces the q/dq graph's output."""
    (output,) = plain.graph.find_nodes(op="output")
    (result,) = output.args[0]
    assert result.target is DQ, f"expected a dequantized output, got {result.format_node()}"
    return result.args[1]


def assert_within_one_step(
    reference: GraphModule, plain: GraphModule, inputs: tuple, mostly_equal: bool = True
) -> None:
    step = output_step(plain)
    difference = (reference(*inputs) - plain(*inputs)).abs()
    assert difference.max() <= step * (1 + 1e-5), f"{difference.max()} > one step {step}"
    if mostly_equal:
        # one step is the worst case of a rounding tie broken the other way, not the norm
        assert (difference > 0).float().mean() < 0.1


def only_node(gm: GraphModule, target) -> Node:
    (node,) = gm.graph.find_nodes(op="call_function", target=target)
    return node


def cast_to(node: object, dtype: torch.dtype) -> bool:
    return isinstance(node, Node) and node.target is aten.to.dtype and node.args[1] == dtype
