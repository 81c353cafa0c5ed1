"""Presets and graph helpers shared by the XNNPACKQuantizer tests.

test_xnnpack_patterns.py, test_xnnpack_scoping.py and test_xnnpack_config.py quantize the
models of :mod:`tests.models.xnnpack_patterns` with these presets and read the converted graph
through these helpers (which dequantize feeds a weight, which scale an edge carries);
test_xnnpack_executorch_parity.py builds its quantizer with ``global_quantizer``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops import qdq_ops
from quantizers.config import QuantizationConfig
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

aten = torch.ops.aten
Q, DQ = qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR
DQ_CH = qdq_ops.DEQUANTIZE_PER_CHANNEL
CHOOSE = qdq_ops.CHOOSE_QPARAMS
Q_DYN, DQ_DYN = qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC, qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC

PER_TENSOR = get_symmetric_quantization_config()
PER_CHANNEL = get_symmetric_quantization_config(is_per_channel=True)
DYNAMIC = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
QAT = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)


def quantize(model: nn.Module, inputs: tuple, quantizer: XNNPACKQuantizer) -> GraphModule:
    """Export in eval mode, prepare, calibrate on ``inputs`` once, convert."""
    exported = torch.export.export(model.eval(), inputs).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        prepared(*inputs)
    return convert_pt2e(prepared)


def prepare(model: nn.Module, inputs: tuple, quantizer: XNNPACKQuantizer) -> GraphModule:
    return prepare_pt2e(torch.export.export(model.eval(), inputs).module(), quantizer)


def global_quantizer(config: QuantizationConfig) -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(config)


def call_nodes(gm: GraphModule, target) -> list[Node]:
    """The call_function nodes of ``gm`` that call ``target``, in graph order."""
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


def weight_dq(node: Node) -> Node | None:
    """The dequantize feeding ``node``'s weight, or None when the weight stayed float."""
    weight = node.args[1]
    return weight if weight.target in (DQ, DQ_CH) else None


def input_scale(node: Node, index: int = 0) -> float:
    dq = node.args[0][index] if isinstance(node.args[0], (list, tuple)) else node.args[index]
    assert dq.target is DQ, f"{node.name} input {index} is not dequantized"
    return float(dq.args[1])


def output_scale(node: Node) -> float:
    (q,) = [u for u in node.users if u.target is Q]
    return float(q.args[1])
