"""QAT at the LLM granularities (pt2e_quant/fake_quantize/granular.py): per-group weights with
qparams from the current weight, per-token activations; what training simulates is exactly what
convert emits."""

from __future__ import annotations

import warnings

import pytest
import torch

import pt2e_quant
from pt2e_quant.errors import AnnotationError, SpecError
from pt2e_quant.fake_quantize import PerTokenFakeQuantize, WeightFakeQuantize
from pt2e_quant.observer import (
    MinMaxObserver,
    PerChannelMinMaxObserver,
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    PlaceholderObserver,
)
from pt2e_quant.ops import qdq_ops
from quantizers import XNNPACKQuantizer, get_per_token_quantization_config
from tests.models.zoo_decoder import LlamaStyleDecoder


def _int4_groups(group_size: int = 16) -> WeightFakeQuantize:
    observer = PerGroupMinMaxObserver.with_args(group_size=group_size)
    return WeightFakeQuantize(observer=observer, quant_min=-8, quant_max=7, dtype=torch.int8)


def _group_round_trip(w: torch.Tensor, module: WeightFakeQuantize) -> torch.Tensor:
    scale, zero_point = module.calculate_qparams()
    args = (scale, zero_point, -8, 7, torch.int8, module.group_size)
    quantized = qdq_ops.QUANTIZE_PER_CHANNEL_GROUP(w, *args)
    return qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP(quantized, *args, torch.float32)


def test_group_fake_quant_is_the_group_ops_round_trip_bit_for_bit():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    module = _int4_groups()
    simulated = module(w)
    assert module.scale.shape == (8, 4)
    assert torch.equal(simulated, _group_round_trip(w, module))
    assert len(torch.unique(simulated[0, :16] / module.scale[0, 0])) <= 16  # 4 bits


def test_weight_qparams_follow_the_current_weight_not_a_running_range():
    module = _int4_groups()
    module(torch.full((2, 32), 4.0))
    module(torch.full((2, 32), 1.0))  # a running min/max would keep amax 4
    assert torch.allclose(module.scale, torch.full((2, 2), 1.0 / 7.5))


def test_frozen_observer_keeps_the_last_qparams():
    module = _int4_groups()
    module(torch.full((2, 32), 4.0))
    module.disable_observer()
    module(torch.full((2, 32), 1.0))
    assert torch.allclose(module.scale, torch.full((2, 2), 4.0 / 7.5))


def test_group_gradient_passes_inside_the_range_and_stops_outside():
    module = _int4_groups()
    module(torch.ones(1, 16))  # scale 1/7.5 for every group
    module.disable_observer()
    w = torch.tensor([[0.5] * 15 + [3.0]], requires_grad=True)
    module(w).sum().backward()
    assert w.grad is not None
    assert torch.equal(w.grad[0, :15], torch.ones(15)) and w.grad[0, 15] == 0


def test_per_channel_weights_use_whole_channels():
    observer = PerChannelMinMaxObserver.with_args(ch_axis=0)
    module = WeightFakeQuantize(observer=observer, quant_min=-127, quant_max=127, dtype=torch.int8)
    w = torch.randn(4, 10)
    simulated = module(w)
    assert module.group_size is None and module.scale.shape == (4,)
    scale, zero_point = module.calculate_qparams()
    args = (scale, zero_point, 0, -127, 127, torch.int8)
    expected = qdq_ops.DEQUANTIZE_PER_CHANNEL(qdq_ops.QUANTIZE_PER_CHANNEL(w, *args), *args)
    assert torch.equal(simulated, expected)


def test_weight_fake_quant_refuses_a_per_tensor_observer():
    with pytest.raises(SpecError, match="WeightFakeQuantize needs a per-channel or per-group"):
        WeightFakeQuantize(observer=MinMaxObserver)


def test_token_fake_quant_is_the_per_token_ops_round_trip_with_identity_gradient():
    torch.manual_seed(1)
    x = (torch.randn(2, 5, 24) * torch.linspace(0.1, 10, 5).view(1, 5, 1)).requires_grad_()
    module = PerTokenFakeQuantize()
    simulated = module(x)
    scale, zero_point = qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC(x.detach(), torch.int8)
    args = (scale, zero_point, -128, 127, torch.int8)
    quantized = qdq_ops.QUANTIZE_PER_TOKEN(x.detach(), *args)
    assert torch.equal(simulated, qdq_ops.DEQUANTIZE_PER_TOKEN(quantized, *args, torch.float32))
    assert not torch.equal(simulated, x)
    simulated.sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones_like(x))


def test_symmetric_token_fake_quant_uses_the_symmetric_choice():
    x = torch.randn(3, 16) + 2.0  # all positive: asymmetric and symmetric grids differ
    module = PerTokenFakeQuantize(qscheme=torch.per_tensor_symmetric)
    scale, zero_point = qdq_ops.CHOOSE_QPARAMS_PER_TOKEN(x, torch.int8)
    args = (scale, zero_point, -128, 127, torch.int8)
    expected = qdq_ops.DEQUANTIZE_PER_TOKEN(qdq_ops.QUANTIZE_PER_TOKEN(x, *args), *args, x.dtype)
    assert torch.equal(module(x), expected)
    assert not torch.equal(PerTokenFakeQuantize()(x), expected)


def test_token_fake_quant_switched_off_or_empty_passes_through():
    module = PerTokenFakeQuantize()
    empty = torch.empty(0, 8)
    assert module(empty) is empty
    module.disable_fake_quant()
    x = torch.randn(3, 8)
    assert module(x) is x
    assert module.has_observed_data()


def test_token_fake_quant_refuses_other_ranges():
    with pytest.raises(SpecError, match="int8 -128..127"):
        PerTokenFakeQuantize(quant_min=0, quant_max=255, dtype=torch.uint8)
    with pytest.raises(SpecError, match="needs a PerTokenDynamicObserver"):
        PerTokenFakeQuantize(observer=PlaceholderObserver, dtype=torch.int8)
    assert isinstance(PerTokenFakeQuantize().activation_post_process, PerTokenDynamicObserver)


def _train(prepared: torch.fx.GraphModule, example: tuple, steps: int = 3) -> None:
    optimizer = torch.optim.SGD(prepared.parameters(), lr=1e-2)
    for _ in range(steps):
        prepared(*example).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize(("weight_bits", "group_size"), [(4, 32), (8, None)])
def test_qat_decoder_converts_to_exactly_what_it_trained(weight_bits, group_size):
    """8da4w / 8da8w QAT on the zoo decoder: weights move, the converted model computes
    bit for bit what the trained model simulates, with the same ops as post-training."""
    torch.manual_seed(0)
    model = LlamaStyleDecoder()
    example = model.example_inputs()
    config = get_per_token_quantization_config(weight_bits, group_size, is_qat=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model.train(), example).module()
    prepared = pt2e_quant.prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    _train(prepared, example)
    assert any(not torch.equal(p, before[n]) for n, p in prepared.named_parameters())
    with torch.no_grad():
        simulated = prepared(*example)
        converted = pt2e_quant.convert_pt2e(prepared)
        assert torch.equal(converted(*example), simulated)
    targets = {n.target for n in converted.graph.nodes if n.op == "call_function"}
    weight_dq = (
        qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP if weight_bits == 4 else qdq_ops.DEQUANTIZE_PER_CHANNEL
    )
    assert {qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC, weight_dq} <= targets
    assert not any(
        qdq_ops.is_quantize(n) and n.args[0].op == "get_attr" for n in converted.graph.nodes
    )
    schemes = {row.scheme for row in pt2e_quant.explain(converted).rows if row.op == "linear"}
    bits = "int4 per-group (32)" if weight_bits == 4 else "int8 per-channel"
    assert schemes == {f"act int8 per-token (dynamic), weight {bits}"}


def test_qat_prepared_model_reports_the_same_schemes():
    model = LlamaStyleDecoder()
    config = get_per_token_quantization_config(4, 32, is_qat=True)
    exported = torch.export.export(model.train(), model.example_inputs()).module()
    prepared = pt2e_quant.prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))
    schemes = {row.scheme for row in pt2e_quant.explain(prepared).rows if row.op == "linear"}
    assert schemes == {"act int8 per-token (dynamic), weight int4 per-group (32)"}


def test_qat_config_in_post_training_prepare_is_refused():
    model = LlamaStyleDecoder()
    config = get_per_token_quantization_config(4, 32, is_qat=True)
    exported = torch.export.export(model.eval(), model.example_inputs()).module()
    with pytest.raises(AnnotationError, match="fake-quantize module meant for quantization-aware"):
        pt2e_quant.prepare_pt2e(exported, XNNPACKQuantizer().set_global(config))


def test_qat_group_size_that_does_not_divide_is_refused_at_prepare():
    model = LlamaStyleDecoder()
    config = get_per_token_quantization_config(4, 96, is_qat=True)
    exported = torch.export.export(model.train(), model.example_inputs()).module()
    with pytest.raises(AnnotationError, match="groups of 96 input columns"):
        pt2e_quant.prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))
