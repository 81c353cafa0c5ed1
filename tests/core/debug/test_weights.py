"""extract_weights: float vs dequantized weights per layer, per channel, with batch norm folded."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug.comparison import compute_sqnr
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.weights import extract_weights
from pt2e_quant.ops.qdq_ops import is_dequantize
from pt2e_quant.passes.fold_batch_norm import BatchNormNotFoldedWarning
from quantizers import (
    EmbeddingQuantizer,
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.models.seed_models import (
    Conv2dThenConv1d,
    ConvWithBNRelu,
    EmbeddingModule,
    TwoLinearModule,
)


def _quantize(model, quantizer, strict=False, handles=True):
    model = model.eval()
    inputs = model.example_inputs()
    ep = torch.export.export(model, inputs, strict=strict)
    if handles:
        generate_numeric_debug_handle(ep)
    prepared = prepare_pt2e(ep.module(), quantizer)
    prepared(*inputs)
    return ep, convert_pt2e(prepared)


def _xnnpack(per_channel: bool) -> XNNPACKQuantizer:
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    return XNNPACKQuantizer().set_global(config)


def _weight_dq(gm, op_name: str):
    """The dequantize feeding ``op_name``'s weight (argument 1), found by hand."""
    (op,) = [n for n in gm.graph.nodes if n.name == op_name]
    dq = op.args[1]
    assert is_dequantize(dq)
    return dq


def test_per_tensor_linear_matches_hand_quantized_weight() -> None:
    model = TwoLinearModule()
    ep, quantized = _quantize(model, _xnnpack(per_channel=False))
    weights = extract_weights(ep, quantized)

    assert list(weights) == [1, 2]  # handles of linear1 / linear2, in graph order
    first = weights[1]
    assert (first.op, first.module_path, first.fqn) == ("linear", "linear1", "linear1.weight")
    assert first.qscheme == torch.per_tensor_symmetric and first.axis is None
    assert first.dtype == torch.int8 and first.channel_sqnr is None and not first.bn_folded
    # Re-quantize the float weight with the graph's own scale: the same SQNR must come out.
    scale = _weight_dq(quantized, "linear").args[1]
    w = model.linear1.weight.detach()
    by_hand = torch.clamp(torch.round(w / scale), -127, 127) * scale
    assert first.sqnr == pytest.approx(float(compute_sqnr(w, by_hand)), rel=1e-5)
    assert first.min_sqnr == first.sqnr > 35
    assert 0 < first.l2 < 0.05 and first.cosine > 0.999


def test_per_channel_conv_has_one_sqnr_per_output_channel() -> None:
    model = Conv2dThenConv1d()
    ep, quantized = _quantize(model, _xnnpack(per_channel=True), strict=True)
    weights = extract_weights(ep, quantized)

    assert [w.op for w in weights.values()] == ["conv2d", "conv1d"]
    conv = weights[1]
    assert conv.qscheme == torch.per_channel_symmetric and conv.axis == 0
    assert len(conv.channel_sqnr) == 3 and conv.min_sqnr == min(conv.channel_sqnr)
    dq = _weight_dq(quantized, "conv2d")
    scales = getattr(quantized, dq.args[1].target)
    w = model.conv2d.weight.detach()
    by_hand = torch.clamp(torch.round(w / scales.view(-1, 1, 1, 1)), -127, 127)
    by_hand = by_hand * scales.view(-1, 1, 1, 1)
    expected = [float(compute_sqnr(w[c], by_hand[c])) for c in range(3)]
    assert conv.channel_sqnr == pytest.approx(expected, rel=1e-5)
    assert all(s > 35 for s in conv.channel_sqnr)


def _conv_bn_with_real_statistics() -> ConvWithBNRelu:
    """Batch-norm statistics far from identity, so folding visibly changes the weight."""
    model = ConvWithBNRelu(relu=True)
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.01, 0.1)
        model.bn.weight.uniform_(2, 4)
    return model


def test_batch_norm_folded_weights_compare_against_folded_float_weight() -> None:
    model = _conv_bn_with_real_statistics()
    ep, quantized = _quantize(model, _xnnpack(per_channel=True))
    (conv,) = extract_weights(ep, quantized).values()

    assert conv.bn_folded and conv.note is None and conv.fqn == "conv.weight"
    assert conv.sqnr > 35
    # The comparison the fold avoids: against the unfolded float weight it is meaningless.
    dq = _weight_dq(quantized, "conv2d")
    dequantized = dq.target(*[getattr(quantized, a.target) for a in dq.args[:3]], *dq.args[3:])
    assert float(compute_sqnr(model.conv.weight.detach(), dequantized)) < 10


def test_batch_norm_without_constant_statistics_gives_no_sqnr() -> None:
    model = _conv_bn_with_real_statistics()
    ep, quantized = _quantize(model, _xnnpack(per_channel=True))
    float_gm = ep.module()
    float_gm.bn.register_buffer("running_var", None)  # the fold can no longer be rebuilt
    (conv,) = extract_weights(float_gm, quantized).values()
    assert conv.sqnr is conv.l2 is conv.cosine is conv.channel_sqnr is None
    assert "folded batch norm" in conv.note


def test_x86_inductor_conv_bn_weights() -> None:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    ep, quantized = _quantize(_conv_bn_with_real_statistics(), quantizer)
    (conv,) = extract_weights(ep, quantized).values()
    assert conv.qscheme == torch.per_channel_symmetric and conv.dtype == torch.int8
    assert conv.bn_folded and len(conv.channel_sqnr) == 3 and conv.min_sqnr > 35


def test_embedding_weight_is_argument_zero() -> None:
    ep, quantized = _quantize(EmbeddingModule(), EmbeddingQuantizer())
    (emb,) = extract_weights(ep, quantized).values()
    assert (emb.op, emb.fqn, emb.axis) == ("embedding", "emb.weight", 0)
    assert emb.min_sqnr > 30


def test_shape_mismatch_is_reported_not_scored() -> None:
    """A float model that is not the quantized model's original: no misleading SQNR."""

    class Wider(TwoLinearModule):
        def __init__(self) -> None:
            super().__init__()
            self.linear1 = nn.Linear(8, 16, bias=False)
            self.linear2 = nn.Linear(16, 4)

    original = TwoLinearModule()
    _, quantized = _quantize(original, _xnnpack(per_channel=False))
    wider = Wider().eval()
    wider.linear1.load_state_dict(original.linear1.state_dict())
    other = torch.export.export(wider, wider.example_inputs())
    generate_numeric_debug_handle(other)
    weights = extract_weights(other, quantized)
    assert weights[1].sqnr > 35  # same shape: compared
    assert weights[2].sqnr is None and "shape" in weights[2].note


def test_without_handles_matches_by_node_name() -> None:
    ep, quantized = _quantize(TwoLinearModule(), _xnnpack(per_channel=False), handles=False)
    weights = extract_weights(ep, quantized)
    assert list(weights) == ["linear", "linear_1"]
    assert all(w.handle is None and w.sqnr > 35 for w in weights.values())


class ConvWithInputBiasThenBatchNorm(nn.Module):
    """conv2d's bias is a forward argument, so prepare cannot fold the batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 1, 1))
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_var.uniform_(0.01, 0.1)
            self.bn.weight.uniform_(2, 4)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.bn(nn.functional.conv2d(x, self.weight, bias))

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(1, 3, 4, 4), torch.randn(4)


def test_batch_norm_kept_in_both_graphs_compares_the_raw_weights() -> None:
    """When the quantized graph still runs the batch norm (the fold was refused), its conv
    quantized the raw weight, so that is what the float side must be too, not a fold."""
    model = ConvWithInputBiasThenBatchNorm()
    with pytest.warns(BatchNormNotFoldedWarning, match="is not folded"):
        ep, quantized = _quantize(model, _xnnpack(per_channel=True))
    assert any("batch_norm" in str(n.target) for n in quantized.graph.nodes)
    (conv,) = extract_weights(ep, quantized).values()
    assert not conv.bn_folded and conv.note is None
    assert conv.sqnr > 35
