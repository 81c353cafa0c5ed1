"""Quantization-aware training: conv / linear + batch norm simulation at prepare, fold at convert.

The models are exported in training mode, as a QAT flow does. XNNPACK's QAT config is the
quantizer (per-channel int8 weights with fused moving-average fake-quant, int8 activations);
the X86 config covers linear + BatchNorm1d, whose output XNNPACK observes before the norm.
"""

from __future__ import annotations

import copy
import dataclasses
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
    move_exported_model_to_train,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.fake_quantize import FakeQuantize, FakeQuantizeBase, disable_observer
from pt2e_quant.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.simulate_batch_norm_folding import BatchNormNotFusedWarning
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.graph_check import count_ops, ops_in_order
from tests.models import CondLinear, ScanLinear, WhileLinear

aten = torch.ops.aten

_CONVS = {
    "conv1d": (nn.Conv1d, nn.BatchNorm1d, (2, 3, 10)),
    "conv2d": (nn.Conv2d, nn.BatchNorm2d, (2, 3, 8, 8)),
    "conv_transpose1d": (nn.ConvTranspose1d, nn.BatchNorm1d, (2, 3, 10)),
    "conv_transpose2d": (nn.ConvTranspose2d, nn.BatchNorm2d, (2, 3, 8, 8)),
}


class ConvBn(nn.Module):
    """conv -> bn (-> relu / hardtanh) with non-default bn hyper-parameters."""

    def __init__(self, kind: str, bias: bool = True, act: str | None = "relu") -> None:
        super().__init__()
        conv_cls, bn_cls, self.shape = _CONVS[kind]
        self.conv = conv_cls(3, 4, 3, bias=bias)
        self.bn = bn_cls(4, eps=1e-3, momentum=0.3)
        self.act = {"relu": nn.ReLU(), "hardtanh": nn.Hardtanh(), None: nn.Identity()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(*self.shape),)


class LinearBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.linear(x)))

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(5, 4),)


class SharedWeightConvs(nn.Module):
    """Two convs reading one weight, each followed by its own batch norm."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.bn1 = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(nn.functional.conv2d(x, self.weight)))
        b = torch.relu(self.bn2(nn.functional.conv2d(x * 2, self.weight)))
        return a + b

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, 3, 8, 8),)


def _xnnpack_qat() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )


def _unfused_xnnpack_qat() -> XNNPACKQuantizer:
    """XNNPACK's QAT preset with plain FakeQuantize modules instead of the fused kernel.

    The fused kernel computes its training-time scale for the restricted weight range
    [-127, 127] as 2·amax/255, while convert (here as in torchao) uses the observer's amax/127;
    plain FakeQuantize trains with the observer's own qparams, so QAT eval and the converted
    model can be compared to one quantization step.
    """
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)

    def unfused(spec, observer):
        return dataclasses.replace(
            spec, observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=observer)
        )

    activation = unfused(config.input_activation, MovingAverageMinMaxObserver)
    return XNNPACKQuantizer().set_global(
        dataclasses.replace(
            config,
            input_activation=activation,
            output_activation=activation,
            weight=unfused(config.weight, MovingAveragePerChannelMinMaxObserver),
        )
    )


def _x86_qat() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=True)
    )


def _export_train(model: nn.Module, strict: bool = False) -> torch.fx.GraphModule:
    return torch.export.export(model.train(), model.example_inputs(), strict=strict).module()


def _train(prepared: torch.fx.GraphModule, model: nn.Module, steps: int = 3) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        prepared(*(torch.randn_like(t) for t in model.example_inputs()))


def _output_scale(converted: torch.fx.GraphModule) -> float | None:
    """Scale of the last dequantize (the output's quantization step), if the output is quantized."""
    output = next(n for n in converted.graph.nodes if n.op == "output")
    value = output.args[0][0]
    if value.target is qdq_ops.DEQUANTIZE_PER_TENSOR:
        return float(value.args[1])
    return None


def _qdq_sequence(gm: torch.fx.GraphModule) -> list[str]:
    return [str(op) for op in ops_in_order(gm) if "quantize" in str(op) or "conv" in str(op)]


def _weight_dequantize_before_its_conv(sequence: list[str]) -> list[str]:
    """A post-training sequence (weight dequantize first, next to the weight) in QAT's order:
    the weight's dequantize right before its conv, where torchao's QAT convert leaves it."""
    weight_dq = str(qdq_ops.DEQUANTIZE_PER_CHANNEL)
    rest = [op for op in sequence if op != weight_dq]
    conv = next(i for i, op in enumerate(rest) if "conv" in op)
    return rest[:conv] + [weight_dq] * sequence.count(weight_dq) + rest[conv:]


# --- prepare: the simulation --------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", sorted(_CONVS))
def test_prepare_rewrites_conv_bn_into_the_scaled_weight_simulation(kind: str, bias: bool) -> None:
    model = ConvBn(kind, bias=bias)
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    nodes = {n.name: n for n in prepared.graph.nodes}
    conv = next(n for n in nodes.values() if n.op == "call_function" and "conv" in str(n.target))
    weight_fq = conv.args[1]
    assert weight_fq.op == "call_module"
    assert isinstance(prepared.get_submodule(weight_fq.target), FakeQuantizeBase)
    scaled = weight_fq.args[0]
    assert scaled.target is aten.mul.Tensor and scaled.args[0].op == "get_attr"
    # conv output goes through "/ s" (and "+ b") into the still-training batch norm
    (divide,) = conv.users
    assert divide.target is aten.div.Tensor
    bn = next(n for n in nodes.values() if n.target is aten.batch_norm.default)
    if bias:
        assert conv.args[2].target is aten.zeros_like.default
        assert bn.args[0].target is aten.add.Tensor and bn.args[0].args[0] is divide
    else:
        assert len(conv.args) < 3 or conv.args[2] is None
        assert bn.args[0] is divide
    # the layer's own batch-norm hyper-parameters survive (torchao resets eps and momentum)
    assert bn.args[5:8] == (True, 0.3, 1e-3)


def test_running_statistics_keep_updating_in_training() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    before = prepared.bn.running_mean.clone()
    _train(prepared, model, steps=1)
    assert not torch.equal(before, prepared.bn.running_mean)
    move_exported_model_to_eval(prepared)
    frozen = prepared.bn.running_mean.clone()
    _train(prepared, model, steps=1)
    assert torch.equal(frozen, prepared.bn.running_mean)


@pytest.mark.parametrize("model", [ConvBn("conv2d"), LinearBn()], ids=["conv_bn", "linear_bn"])
def test_batch_norm_of_an_eval_mode_export_trains(model: nn.Module) -> None:
    """torchao's quick start exports in eval mode before prepare_qat_pt2e; its rewrite trains
    the fused batch norm anyway, and so does ours (move_exported_model_to_eval freezes it)."""
    exported = torch.export.export(model.eval(), model.example_inputs()).module()
    quantizer = _xnnpack_qat() if isinstance(model, ConvBn) else _x86_qat()
    prepared = prepare_qat_pt2e(exported, quantizer)
    (bn,) = [n for n in prepared.graph.nodes if n.target is aten.batch_norm.default]
    assert bn.args[5] is True
    before = prepared.bn.running_mean.clone()
    _train(prepared, model, steps=1)
    assert not torch.equal(before, prepared.bn.running_mean)


def test_training_the_prepared_model_trains_the_model_passed_in() -> None:
    """Deliberate (README, "Copies, not mutation"): like torchao, whose prepare returns the
    model it was given, QAT trains the caller's parameters and statistics, not copies."""
    model = ConvBn("conv2d")
    exported = _export_train(model)
    prepared = prepare_qat_pt2e(exported, _xnnpack_qat())
    weight, mean = exported.conv.weight.detach().clone(), exported.bn.running_mean.clone()
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    prepared(*model.example_inputs()).sum().backward()
    optimizer.step()
    assert not torch.equal(exported.conv.weight, weight)
    assert not torch.equal(exported.bn.running_mean, mean)
    assert exported.conv.weight is prepared.conv.weight


def test_simulation_matches_float_conv_bn_up_to_weight_quantization() -> None:
    torch.manual_seed(0)
    model = ConvBn("conv2d", act=None)
    reference = copy.deepcopy(model).train()
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    for module in prepared.modules():
        if isinstance(module, FakeQuantizeBase):
            module.disable_fake_quant()
    x = model.example_inputs()[0]
    torch.testing.assert_close(prepared(x), reference(x), rtol=1e-4, atol=1e-4)


def test_gradients_flow_and_fake_quant_scales_track_the_data() -> None:
    torch.manual_seed(0)
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.05)
    x = torch.randn(2, 3, 8, 8)
    target = torch.rand(2, 4, 6, 6)
    output_fq = prepared.get_submodule(
        next(n for n in prepared.graph.nodes if n.op == "output").args[0][0].target
    )
    losses, scales = [], []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(prepared(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        scales.append(float(output_fq.scale))
    assert prepared.conv.weight.grad is not None and prepared.bn.weight.grad is not None
    assert losses[-1] < losses[0]
    assert len(set(scales)) > 1  # the moving-average observer follows the changing output


# --- convert: the fold --------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "hardtanh", None])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("kind", sorted(_CONVS))
def test_convert_folds_bn_and_matches_ptq_structure_and_qat_eval(
    kind: str, bias: bool, act
) -> None:
    torch.manual_seed(0)
    model = ConvBn(kind, bias=bias, act=act)
    prepared = prepare_qat_pt2e(_export_train(model), _unfused_xnnpack_qat())
    _train(prepared, model)
    prepared.apply(disable_observer)  # freeze qparams, as before evaluating a QAT model
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    converted = convert_pt2e(prepared)

    ops = count_ops(converted)
    assert aten.batch_norm.default not in ops and aten.add_.Tensor not in ops
    assert aten.mul.Tensor not in ops and aten.div.Tensor not in ops
    assert qdq_ops.QUANTIZE_PER_CHANNEL not in ops  # the folded weight is an int8 constant
    ptq = prepare_pt2e(
        torch.export.export(copy.deepcopy(model).eval(), (x,)).module(),
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)),
    )
    ptq(x)
    # the q / dq of post-training quantization, in torchao's QAT order
    ptq_sequence = _qdq_sequence(convert_pt2e(ptq))
    assert ptq_sequence[0] == str(qdq_ops.DEQUANTIZE_PER_CHANNEL)
    assert _weight_dequantize_before_its_conv(ptq_sequence) == _qdq_sequence(converted)

    step = _output_scale(converted)
    assert step is not None
    diff = (converted(x) - qat_eval).abs().max().item()
    assert diff <= step * 1.001, f"max diff {diff} exceeds one quantization step {step}"


@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
def test_linear_bn_is_simulated_and_folded(backend: str) -> None:
    torch.manual_seed(0)
    model = LinearBn()
    quantizer = _unfused_xnnpack_qat() if backend == "xnnpack" else _x86_qat()
    prepared = prepare_qat_pt2e(_export_train(model), quantizer)
    linear = next(n for n in prepared.graph.nodes if n.target is aten.linear.default)
    assert linear.args[1].args[0].target is aten.mul.Tensor
    _train(prepared, model)
    prepared.apply(disable_observer)
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in count_ops(converted)
    # XNNPACK quantizes the relu output (compare to one step); x86 leaves it float, where the
    # only difference is the folded weight's rounding
    step = _output_scale(converted) or 0.02
    assert (converted(x) - qat_eval).abs().max().item() <= step * 1.001


def test_convs_sharing_one_weight_fold_into_separate_weights() -> None:
    torch.manual_seed(0)
    model = SharedWeightConvs()
    prepared = prepare_qat_pt2e(_export_train(model), _unfused_xnnpack_qat())
    _train(prepared, model)
    prepared.apply(disable_observer)
    move_exported_model_to_eval(prepared)
    x = model.example_inputs()[0]
    qat_eval = prepared(x)
    original = prepared.weight.detach().clone()
    converted = convert_pt2e(prepared)
    assert torch.equal(prepared.weight, original)  # the prepared model is untouched
    weights = [n for n in converted.graph.nodes if n.target is qdq_ops.DEQUANTIZE_PER_CHANNEL]
    assert len(weights) == 2
    assert weights[0].args[0].target != weights[1].args[0].target
    step = _output_scale(converted)
    assert (converted(x) - qat_eval).abs().max().item() <= 2 * step * 1.001


@pytest.mark.parametrize("strict", [False, True], ids=["non_strict", "strict"])
def test_both_export_modes(strict: bool) -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model, strict=strict), _xnnpack_qat())
    _train(prepared, model)
    converted = convert_pt2e(prepared)
    assert aten.batch_norm.default not in count_ops(converted)


def test_convert_leaves_the_prepared_model_usable() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    _train(prepared, model)
    graph_before = str(prepared.graph)
    convert_pt2e(prepared)
    assert str(prepared.graph) == graph_before
    _train(prepared, model, steps=1)  # training can continue


# --- train / eval -------------------------------------------------------------------------


def test_train_eval_toggles_keep_hyper_parameters_and_are_idempotent() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    bn = next(n for n in prepared.graph.nodes if n.target is aten.batch_norm.default)
    for _ in range(2):
        move_exported_model_to_eval(prepared)
        assert bn.args[5:8] == (False, 0.3, 1e-3)
    for _ in range(2):
        move_exported_model_to_train(prepared)
        assert bn.args[5:8] == (True, 0.3, 1e-3)


# --- bad input ----------------------------------------------------------------------------


def test_bn_without_running_stats_is_left_unfused_with_a_warning() -> None:
    model = ConvBn("conv2d")
    model.bn = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.warns(BatchNormNotFusedWarning, match="'batch_norm'.*track_running_stats"):
        prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    conv = next(n for n in prepared.graph.nodes if n.target is aten.conv2d.default)
    assert conv.args[1].args[0].op == "get_attr"  # the plain weight, no scaling
    _train(prepared, model)
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
        prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
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
        prepare_qat_pt2e(_export_train(ConvBn("conv2d")), ObserveConvOutput())


def test_ptq_config_in_prepare_qat_says_which_function_to_call() -> None:
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with pytest.raises(AnnotationError, match="prepare_qat_pt2e.*observer.*is_qat=True"):
        prepare_qat_pt2e(_export_train(ConvBn("conv2d")), quantizer)


def test_qat_config_in_prepare_pt2e_says_which_function_to_call() -> None:
    model = ConvBn("conv2d").eval()
    gm = torch.export.export(model, model.example_inputs()).module()
    with pytest.raises(AnnotationError, match="fake-quantize.*Call prepare_qat_pt2e"):
        prepare_pt2e(gm, _xnnpack_qat())


def test_converting_an_untrained_qat_model_warns_and_gives_defined_qparams() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    with pytest.warns(UserWarning, match="never"):
        converted = convert_pt2e(prepared)
    out = converted(*model.example_inputs())
    assert torch.isfinite(out).all()


def test_converting_with_fake_quant_disabled_warns_and_gives_defined_qparams() -> None:
    model = ConvBn("conv2d")
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
    for module in prepared.modules():
        if isinstance(module, FakeQuantizeBase):
            module.disable_fake_quant()
            module.disable_observer()
    _train(prepared, model)
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
    prepared = prepare_qat_pt2e(_export_train(model), _xnnpack_qat())
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
