"""8da4w weights against torchao's own int8-dynamic-activation / int4-weight configuration.

torchao's eager ``quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=
torch.int4, weight_granularity=PerGroup(32)))`` is the oracle: with min/max symmetric groups,
the int4 values and scales our ``get_per_token_quantization_config`` folds into the converted
model must be bit-identical to the ``qdata`` / ``scale`` torchao stores, and the model outputs
must agree within float rounding (both quantize the activations per token at run time; torchao
picks its zero points by the plain affine rule, ``choose_qparams_per_token_asymmetric`` by
XNNPACK's, so a token's rounding may differ by one step: the bound is one activation step of
that token times the layer's weights, as in the lowering test).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant.ops import qdq_ops
from quantizers import XNNPACKQuantizer, get_per_token_quantization_config

pytestmark = pytest.mark.torchao
torchao_quantization = pytest.importorskip("torchao.quantization")


def _two_linears(in_features: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, 64), nn.ReLU(), nn.Linear(64, 32, bias=False))


def _torchao_8da4w(model: nn.Module, group_size: int) -> nn.Module:
    quantized = copy.deepcopy(model)
    config = torchao_quantization.Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=torchao_quantization.PerGroup(group_size)
    )
    torchao_quantization.quantize_(quantized, config)
    return quantized


def _ours_8da4w(model: nn.Module, x: torch.Tensor, group_size: int) -> torch.fx.GraphModule:
    quantizer = XNNPACKQuantizer().set_global(
        get_per_token_quantization_config(weight_bits=4, group_size=group_size)
    )
    exported = torch.export.export(model, (x,)).module()
    prepared = pt2e_quant.prepare_pt2e(exported, quantizer)
    prepared(x)
    return pt2e_quant.convert_pt2e(prepared)


@pytest.mark.parametrize(("in_features", "group_size"), [(64, 32), (128, 64)])
def test_int4_weights_and_scales_are_torchaos_bit_for_bit(in_features, group_size):
    torch.manual_seed(0)
    model = _two_linears(in_features).eval()
    x = torch.randn(3, 7, in_features)
    theirs = _torchao_8da4w(model, group_size)
    ours = _ours_8da4w(model, x, group_size)
    dequantizes = [n for n in ours.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP]
    their_weights = [m.weight for m in theirs.modules() if isinstance(m, nn.Linear)]
    assert len(dequantizes) == len(their_weights) == 2
    for dq, weight in zip(dequantizes, their_weights, strict=True):
        qdata = getattr(ours, str(dq.args[0].target))
        scale = getattr(ours, str(dq.args[1].target))
        assert torch.equal(qdata, weight.qdata)
        assert scale.dtype == weight.scale.dtype and torch.equal(scale, weight.scale)
        assert not weight.zero_point.any() and not getattr(ours, str(dq.args[2].target)).any()


def test_outputs_agree_with_torchao_within_one_activation_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32)).eval()
    x = torch.randn(4, 5, 64)
    theirs = _torchao_8da4w(model, 32)(x)
    ours = _ours_8da4w(model, x, 32)(x)
    step = (x.amax(-1) - x.amin(-1)) / 255  # one activation step per token
    bound = step[..., None] * model[0].weight.abs().sum(dim=1) + 1e-5
    assert bool(((ours - theirs).abs() <= bound).all())
    assert not torch.equal(ours, model(x))  # quantized, not the float model
