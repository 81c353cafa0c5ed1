"""Where the QAT conv-bn passes put their nodes: torchao's order, checked without torchao.

torchao's rewrite inserts each conv-bn simulation (prepare) and each folded conv with its
weight q / dq (convert) right before the batch norm's first reader, rewriting convs with a
bias first. ``test_qat_conv_bn_node_order`` compares against torchao itself; these tests pin
the same order in the default run, on the passes and on the pipeline.
"""

from __future__ import annotations

import copy

import torch

from pt2e_quant import convert_pt2e, prepare_qat_pt2e
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.simulate_batch_norm_folding import simulate_batch_norm_folding
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import qdq_and_compute_ops
from tests.models import ConvBnBranchesAdd

aten = torch.ops.aten

#: the simulation of a conv with a bias, then of one without, as inserted before their reader
_WITH_BIAS = [
    *(aten.add.Tensor, aten.sqrt.default, aten.div.Tensor, aten.reshape.default, aten.mul.Tensor),
    *(aten.zeros_like.default, aten.conv2d.default),
    *(aten.reshape.default, aten.div.Tensor, aten.reshape.default, aten.add.Tensor),
    aten.batch_norm.default,
]
_WITHOUT_BIAS = [
    *(aten.add.Tensor, aten.sqrt.default, aten.div.Tensor, aten.reshape.default, aten.mul.Tensor),
    *(aten.conv2d.default, aten.reshape.default, aten.div.Tensor, aten.batch_norm.default),
]


def _export_train(model: torch.nn.Module) -> torch.fx.GraphModule:
    return torch.export.export(model.train(), model.example_inputs()).module()


def _calls(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_simulations_go_before_the_batch_norms_first_reader_conv_with_bias_first() -> None:
    """Export traces conv1 (no bias) -> bn1, then conv2 -> bn2; both batch norms are first
    read by the add. Both simulations move there, conv2's first, past the two batch counters
    export placed between each conv and its batch norm."""
    torch.manual_seed(0)
    model = ConvBnBranchesAdd()
    gm = _export_train(model)
    x = model.example_inputs()[0]
    expected = copy.deepcopy(model).train()(x)

    assert simulate_batch_norm_folding(gm) is True

    counters = [aten.add_.Tensor, aten.add_.Tensor]
    assert _calls(gm) == [*counters, *_WITH_BIAS, *_WITHOUT_BIAS, aten.add.Tensor]
    conv2, conv1 = [n for n in gm.graph.nodes if n.target is aten.conv2d.default]
    assert conv2.args[2].target is aten.zeros_like.default and len(conv1.args) == 2
    gm.graph.lint()
    gm.recompile()
    torch.testing.assert_close(gm(x), expected)


def test_simulation_on_a_graph_without_batch_norm_changes_nothing() -> None:
    model = torch.nn.Conv2d(3, 3, 3)
    gm = torch.export.export(model, (torch.randn(1, 3, 5, 5),)).module()
    before = _calls(gm)
    assert simulate_batch_norm_folding(gm) is False
    assert _calls(gm) == before


def test_convert_puts_weight_dequantize_after_the_input_qdq_next_to_its_conv() -> None:
    """As torchao's QAT convert does: each folded conv with its weight dequantize goes right
    before the batch norm's first reader (here its output quantize), after the input's
    quantize / dequantize; post-training quantization puts the weight's dequantize first."""
    torch.manual_seed(0)
    model = ConvBnBranchesAdd()
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )
    prepared = prepare_qat_pt2e(_export_train(model), quantizer)
    prepared(*model.example_inputs())
    converted = convert_pt2e(prepared)

    q, dq, dq_ch = (
        str(op)
        for op in (
            qdq_ops.QUANTIZE_PER_TENSOR,
            qdq_ops.DEQUANTIZE_PER_TENSOR,
            qdq_ops.DEQUANTIZE_PER_CHANNEL,
        )
    )
    conv = str(aten.conv2d.default)
    assert qdq_and_compute_ops(converted) == [
        *(q, dq, dq),  # x, read by both convs
        *(dq_ch, conv, q, dq),  # conv2 (with bias), rewritten first
        *(dq_ch, conv, q, dq),  # conv1
        *(str(aten.add.Tensor), q, dq),
    ]
    conv2, conv1 = [n for n in converted.graph.nodes if n.target is aten.conv2d.default]
    assert conv2.args[2].target == "conv2.bias"  # the folded values, under the conv's name
    assert conv1.args[2].next is conv1  # a new bias, defined right before its conv
