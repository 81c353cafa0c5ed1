"""addmm(bias, x, w): Hugging Face GPT-2's ``Conv1D`` projection, whose weight is (in, out).

ExecuTorch's quantizer has no rule for it, so a GPT-2 gets no int8 matmul there; ours
quantizes it like a linear whose output channels are the weight's columns (per-channel axis
1), static and dynamic. XNNPACK delegates the quantized addmm whole and
its ``.pte`` matches our converted module.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant.ops import qdq_ops
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

aten = torch.ops.aten


class Conv1D(nn.Module):
    """GPT-2's projection: ``addmm(bias, x.view(-1, in), weight)`` with weight (in, out)."""

    def __init__(self, features_in: int = 16, features_out: int = 8, relu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features_in, features_out) * 0.2)
        self.bias = nn.Parameter(torch.randn(features_out) * 0.1)
        self.relu = relu

    def forward(self, x):
        y = torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight)
        y = torch.relu(y) if self.relu else y
        return y.view(*x.shape[:-1], -1)


def _converted(relu: bool, dynamic: bool):
    torch.manual_seed(0)
    model = Conv1D(relu=relu).eval()
    x = torch.randn(2, 5, 16)
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    prepared = pt2e_quant.prepare_pt2e(
        torch.export.export(model, (x,)).module(), XNNPACKQuantizer().set_global(config)
    )
    prepared(x)
    return model, x, pt2e_quant.convert_pt2e(prepared)


@pytest.mark.parametrize(("relu", "dynamic"), [(False, False), (True, False), (False, True)])
def test_addmm_is_quantized_like_a_linear_with_output_channels_on_axis_1(relu, dynamic):
    _, _, converted = _converted(relu, dynamic)
    (addmm,) = [n for n in converted.graph.nodes if n.target == aten.addmm.default]
    bias, activation, weight = addmm.args[:3]
    assert weight.target == qdq_ops.DEQUANTIZE_PER_CHANNEL and weight.args[3] == 1
    assert qdq_ops.is_dequantize(activation) and not qdq_ops.is_dequantize(bias)
    assert qdq_ops.is_dynamic_dequantize(activation) == dynamic
    # static: addmm's own output is quantized; a relu after it is not fused (see rules.py)
    assert qdq_ops.is_quantize(next(iter(addmm.users))) != dynamic


def test_explain_predicts_xnnpack_int8():
    _, _, converted = _converted(relu=False, dynamic=False)
    report = pt2e_quant.explain(converted, XNNPACKQuantizer())
    (row,) = [r for r in report.rows if r.op == "matmul" or r.node == "addmm"]
    assert row.quantized and row.prediction == "xnnpack int8"


@pytest.mark.executorch
@pytest.mark.parametrize(("relu", "dynamic"), [(False, False), (True, False), (False, True)])
def test_xnnpack_delegates_it_and_runs_it_like_ours(relu, dynamic):
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    model, x, converted = _converted(relu, dynamic)
    edge = to_edge_transform_and_lower(
        torch.export.export(converted, (x,)), partitioner=[XnnpackPartitioner()]
    )
    left = [
        str(n.target)
        for n in edge.exported_program().graph_module.graph.nodes
        if n.op == "call_function" and "executorch_call_delegate" not in str(n.target)
    ]
    assert left == ["<built-in function getitem>"], left
    buffer = edge.to_executorch().buffer
    program = Runtime.get().load_program(buffer)  # the method needs its program alive
    theirs = program.load_method("forward").execute([x])[0]
    ours = converted(x)
    # one step of the input's quantization through the weights (per token when dynamic)
    step = float((x.amax() - x.amin()) / 255)
    bound = step * float(model.weight.abs().sum(dim=0).max()) + 1e-6
    assert float((theirs - ours).abs().max()) <= bound
