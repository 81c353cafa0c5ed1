"""replace_observers on dynamic specs: the choose_qparams op follows the spec's qscheme.

A dynamic per-tensor *symmetric* activation must compute its run-time qparams with
``choose_qparams_symmetric`` (zero point 0); the affine op would pick an asymmetric zero
point, which symmetric-only kernels (XNNPACK's dynamic linear) cannot run.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

import pt2e_quant.observer as our_observer
from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import ConvLinearQuantizer, int8_specs
from tests.graph_check import assert_node_occurrence


def test_symmetric_dynamic_activation_uses_symmetric_choose_qparams() -> None:
    activation, weight = int8_specs(our_observer, dynamic=True)
    symmetric = dataclasses.replace(activation, qscheme=torch.per_tensor_symmetric)
    inputs = (torch.randn(3, 8),)
    gm = torch.export.export(nn.Linear(8, 5).eval(), inputs).module()
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(symmetric, weight))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    assert_node_occurrence(
        converted, {qdq_ops.CHOOSE_QPARAMS_SYMMETRIC: 1, qdq_ops.CHOOSE_QPARAMS: 0}
    )
    (choose,) = converted.graph.find_nodes(
        op="call_function", target=qdq_ops.CHOOSE_QPARAMS_SYMMETRIC
    )
    _, zero_point = qdq_ops.CHOOSE_QPARAMS_SYMMETRIC(inputs[0] + 1.0, *choose.args[1:])
    assert int(zero_point) == 0
