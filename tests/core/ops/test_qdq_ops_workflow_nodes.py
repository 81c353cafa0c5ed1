"""``is_quant_workflow_node`` recognises every node convert inserts, including the getitems
that unpack a dynamic ``choose_qparams``.

The numeric debugger and weight report skip workflow nodes when listing a model's ops; a
getitem of ``(scale, zero_point)`` that is not recognised would show up as a user op (and
``port_qdq_meta`` would stop walking back through it).
"""

from __future__ import annotations

import operator

import torch

import pt2e_quant.observer as our_observer
from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops.qdq_ops import is_quant_workflow_node
from tests.core.contract.quantizer_fixtures import ConvLinearQuantizer, int8_specs
from tests.models.seed_models import TwoLinearModule


def test_dynamic_quantization_nodes_are_all_workflow_nodes() -> None:
    """After dynamic convert, exactly the nodes convert added (choose_qparams, its getitems,
    q, dq) are workflow nodes; the model's own linears are not."""
    torch.manual_seed(0)
    model = TwoLinearModule().eval()
    inputs = model.example_inputs()
    gm = torch.export.export(model, inputs).module()
    original = {n.name for n in gm.graph.nodes}
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer, dynamic=True)))
    prepared(*inputs)
    converted = convert_pt2e(prepared)
    calls = [n for n in converted.graph.nodes if n.op == "call_function"]
    getitems = [n for n in calls if n.target is operator.getitem]
    assert len(getitems) == 4  # (scale, zero_point) of two dynamic activations
    inserted = {n.name for n in calls if n.name not in original}
    assert {n.name for n in calls if is_quant_workflow_node(n)} == inserted
