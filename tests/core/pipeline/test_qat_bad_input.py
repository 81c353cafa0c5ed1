"""Quantization-aware training on bad input: batch norms that cannot be fused (no running
statistics, a zero gamma channel, an observed conv output), configs passed to the wrong
prepare, converting untrained or frozen fake-quants, grouped transposed convs, control flow."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import (
    AnnotationError,
    QuantizationAnnotation,
    Quantizer,
    convert_pt2e,
    move_exported_model_to_eval,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.fake_quantize import FakeQuantizeBase
from pt2e_quant.passes.simulate_batch_norm_folding import BatchNormNotFusedWarning
from quantizers import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from tests.core.pipeline._qat_recipe import export_train, train, xnnpack_qat
from tests.graph_check import count_ops
from tests.models import CondLinear, ScanLinear, WhileLinear
from tests.models.qat import ConvBn

aten = torch.ops.aten

# --- bad input ----------------------------------------------------------------------------


def test_bn_without_running_stats_is_left_unfused_with_a_warning() -> None:
    model = ConvBn("conv2d")
    model.bn = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.warns(BatchNormNotFusedWarning, match="'batch_norm'.*track_running_stats"):
        prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    conv = next(n for n in prepared.graph.nodes if n.target is aten.conv2d.default)
    assert conv.args[1].args[0].op == "get_attr"  # the plain weight, no scaling
    train(prepared, model)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default in count_ops(converted)


def test_bn_with_a_zero_gamma_channel_is_left_unfused_and_trains_without_nan() -> None:
    """zero_init_residual-style gamma: the simulation's division by gamma / std is 0 / 0 in
    that channel (torchao trains NaN weights and then fails in its fake-quant). Left unfused,
    the pair trains like the float model, gamma included."""
    model = ConvBn("conv2d", act=None)
    with torch.no_grad():
        model.bn.weight[1] = 0.0
    with pytest.warns(
        BatchNormNotFusedWarning, match=r"gamma\) is exactly 0 in channel\(s\) \[1\]"
    ):
        prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    torch.manual_seed(1)
    for _ in range(2):
        optimizer.zero_grad()
        (prepared(*model.example_inputs()) - 1).square().mean().backward()
        optimizer.step()
    assert all(bool(torch.isfinite(p).all()) for p in prepared.parameters())
    assert float(model.bn.weight[1]) != 0.0  # the zero channel's gamma learns
    converted = convert_pt2e(prepared)
    assert bool(torch.isfinite(converted(*model.example_inputs())).all())


def test_observed_conv_output_is_left_unfused_with_a_warning() -> None:
    class ObserveConvOutput(Quantizer):
        def annotate(self, model):
            spec = get_symmetric_quantization_config(is_qat=True).output_activation
            for node in model.graph.nodes:
                if node.target is aten.conv2d.default:
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: spec}, output_qspec=spec, _annotated=True
                    )
            return model

        def validate(self, model):
            pass

    with pytest.warns(BatchNormNotFusedWarning, match="observes the output of 'conv2d'"):
        prepare_qat_pt2e(export_train(ConvBn("conv2d")), ObserveConvOutput())


def test_ptq_config_in_prepare_qat_says_which_function_to_call() -> None:
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with pytest.raises(AnnotationError, match="prepare_qat_pt2e.*observer.*is_qat=True"):
        prepare_qat_pt2e(export_train(ConvBn("conv2d")), quantizer)


def test_qat_config_in_prepare_pt2e_says_which_function_to_call() -> None:
    model = ConvBn("conv2d").eval()
    gm = torch.export.export(model, model.example_inputs()).module()
    with pytest.raises(AnnotationError, match="fake-quantize.*Call prepare_qat_pt2e"):
        prepare_pt2e(gm, xnnpack_qat())


def test_converting_an_untrained_qat_model_warns_and_gives_defined_qparams() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    with pytest.warns(UserWarning, match="never"):
        converted = convert_pt2e(prepared)
    out = converted(*model.example_inputs())
    assert torch.isfinite(out).all()


def test_converting_with_fake_quant_disabled_warns_and_gives_defined_qparams() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    for module in prepared.modules():
        if isinstance(module, FakeQuantizeBase):
            module.disable_fake_quant()
            module.disable_observer()
    train(prepared, model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_pt2e(prepared)
    assert any("never" in str(w.message) for w in caught)
    assert torch.isfinite(converted(*model.example_inputs())).all()


def test_grouped_transposed_conv_bn_is_simulated_and_folded_per_output_channel() -> None:
    """XNNPACK leaves a grouped transposed conv float; its BN is still simulated and folded,
    with the scale laid out per output channel within each group."""

    class GroupedDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 6, 3, groups=2)
            self.bn = nn.BatchNorm2d(6)

        def forward(self, x):
            return self.bn(self.up(x))

        def example_inputs(self):
            return (torch.randn(2, 4, 5, 5),)

    torch.manual_seed(0)
    model = GroupedDecoder()
    reference = copy.deepcopy(model)
    prepared = prepare_qat_pt2e(export_train(model), xnnpack_qat())
    conv = next(n for n in prepared.graph.nodes if n.target is aten.conv_transpose2d.input)
    assert conv.args[1].target is aten.mul.Tensor
    x = model.example_inputs()[0]
    torch.testing.assert_close(prepared(x), reference.train()(x), rtol=1e-4, atol=1e-4)
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in count_ops(converted)
    torch.testing.assert_close(converted(x), reference.eval()(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "model_cls", [CondLinear, ScanLinear, WhileLinear], ids=lambda c: c.__name__
)
def test_qat_trains_through_control_flow_bodies(model_cls) -> None:
    """A fake-quantized linear inside a cond / scan / while_loop body trains: the prepared
    model runs the bodies as Python (the higher-order ops themselves cannot run fake-quant
    modules under autograd), so the loss reaches the body's weights."""
    torch.manual_seed(0)
    model = model_cls()
    inputs = model.example_inputs()
    exported = torch.export.export(model.train(), inputs).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    assert any(isinstance(m, FakeQuantizeBase) for m in prepared.modules())
    out = prepared(*inputs)
    (out[0] if isinstance(out, (tuple, list)) else out).sum().backward()
    grads = {name for name, p in prepared.named_parameters() if p.grad is not None}
    # the body's linear (for cond: the taken branch's) has a weight and a bias gradient
    assert {name.rpartition(".")[2] for name in grads} == {"weight", "bias"}, grads
