"""rewrite_to_reference leaves an op alone when its *output* is quantized per channel.

The fused integer rewrite (integer accumulate, requantize to one output scale) only knows a
per-tensor output q. A per-channel output q must keep the op as dq -> op -> q, so the reference
model still computes what the q/dq model does instead of requantizing with a scale tensor.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import QuantizationSpec, convert_pt2e, prepare_pt2e
from pt2e_quant.contract.annotation import annotate_input, annotate_output, mark_annotated
from tests.core.contract.quantizer_fixtures import FunctionQuantizer, int8_specs

aten = torch.ops.aten

#: int8 per-channel output of a linear (batch, channels): channels on axis 1
PER_CHANNEL_OUTPUT = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-128,
    quant_max=127,
    qscheme=torch.per_channel_affine,
    ch_axis=1,
    observer_or_fake_quant_ctr=our_observer.PerChannelMinMaxObserver,
)


def _annotate(gm: GraphModule) -> None:
    activation, weight = int8_specs(our_observer)
    for node in gm.graph.nodes:
        if node.target is aten.linear.default:
            annotate_input(node, node.args[0], activation)
            annotate_input(node, node.args[1], weight)
            annotate_output(node, PER_CHANNEL_OUTPUT)
            mark_annotated([node])


def test_per_channel_output_q_is_not_fused_into_integer_linear() -> None:
    """The linear stays a float linear between the rewritten dq and per-channel q, and the
    reference model matches the q/dq model exactly; fusing it would divide by a per-channel
    scale it takes for a float and fail at convert."""
    torch.manual_seed(0)
    model = nn.Linear(8, 5).eval()
    x = torch.randn(4, 8)
    prepared = prepare_pt2e(torch.export.export(model, (x,)).module(), FunctionQuantizer(_annotate))
    prepared(x)
    reference = convert_pt2e(copy.deepcopy(prepared), use_reference_representation=True)
    plain = convert_pt2e(prepared)
    assert [n.target for n in reference.graph.nodes].count(aten.linear.default) == 1
    assert torch.equal(reference(x), plain(x))
