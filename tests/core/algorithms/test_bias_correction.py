"""correct_bias: the mean output shift of quantized conv / linear layers, folded into the bias."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
from pt2e_quant import (
    DerivedQuantizationSpec,
    QuantizationAnnotation,
    convert_pt2e,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.algorithms.bias_correction import (
    CORRECTED_BIAS_PREFIX,
    BiasCorrectionWarning,
    correct_bias,
)
from pt2e_quant.errors import QuantizationError
from pt2e_quant.ops.families import CONV2D_OPS, LINEAR_OPS
from pt2e_quant.pipeline.calibration import CalibrationError
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.core.contract.quantizer_fixtures import FunctionQuantizer, int8_specs

#: |mean shift| per channel left after correction, on outputs of magnitude ~1: float32
#: arithmetic noise, three orders of magnitude below the planted shifts (~0.03 .. 0.1)
TOLERANCE = 1e-5


# ------------------------------------------------------------------------------ helpers


def _layer_quantizer(per_channel: bool, quantize_input: bool = True, bias_spec=None):
    """Quantizes every conv / linear's input (int8 histogram) and weight, not its output, so
    the converted layer's output is exactly ``op(dq(x), dq(w), b)``: what the shift is about."""
    activation, weight = int8_specs(our_observer, per_channel=per_channel)

    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target not in CONV2D_OPS | LINEAR_OPS:
                continue
            x, w = node.args[:2]
            specs = {w: weight}
            if quantize_input:
                specs[x] = activation
            if bias_spec is not None:
                specs[node.args[2]] = bias_spec(x, w, node)
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=specs, _annotated=True
            )

    return FunctionQuantizer(annotate)


def _planted_weight(rows: int, columns: int, per_row_offset: torch.Tensor) -> torch.Tensor:
    """Weights whose int8 rounding errs the same way all along a row.

    Each row holds one anchor of 1.0 (so symmetric min/max scale = 1/127, per tensor or per
    row) and values ``(k + 0.5 + offset_row) / 127``: an offset of +0.1 rounds every one of
    them up by 0.4 / 127, an offset of -0.1 down by as much.
    """
    torch.manual_seed(0)
    levels = torch.randint(-60, 60, (rows, columns)).float()
    weight = (levels + 0.5 + per_row_offset[:, None]) / 127
    weight[:, 0] = 1.0
    return weight


class PlantedLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)
        with torch.no_grad():
            self.fc.weight.copy_(_planted_weight(4, 16, torch.tensor([0.1, -0.1, 0.1, -0.1])))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class PlantedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        with torch.no_grad():
            flat = _planted_weight(3, 18, torch.tensor([0.1, -0.1, 0.1]))
            self.conv.weight.copy_(flat.reshape(3, 2, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _positive_batches(shape: tuple[int, ...], count: int = 4, seed: int = 1) -> list[tuple]:
    """Inputs with a positive mean, so the rows' rounding errors add up instead of cancelling."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(shape, generator=generator) + 0.5,) for _ in range(count)]


def _prepared(model: nn.Module, quantizer, batches: list[tuple], dynamic=None) -> GraphModule:
    exported = torch.export.export(model.eval(), batches[0], dynamic_shapes=dynamic).module()
    prepared = prepare_pt2e(exported, quantizer)
    for batch in batches:
        prepared(*batch)
    return prepared


def _mean_shift(quantized: nn.Module, reference: nn.Module, batches, axis: int) -> torch.Tensor:
    """Per-channel mean of (quantized - reference) outputs over the batches."""
    with torch.no_grad():
        diff = torch.cat([quantized(*b) - reference(*b) for b in batches], dim=0)
    dims = [d for d in range(diff.dim()) if d != axis]
    return diff.double().mean(dim=dims)


def _output_mse(quantized: nn.Module, reference: nn.Module, batches) -> float:
    with torch.no_grad():
        return float(sum(((quantized(*b) - reference(*b)) ** 2).mean() for b in batches))


def _layer_nodes(gm: GraphModule) -> list[Node]:
    return [n for n in gm.graph.nodes if n.target in CONV2D_OPS | LINEAR_OPS]


# ------------------------------------------------------------------------- planted cases


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_a_planted_linear_shift_is_removed(per_channel: bool, sequential: bool) -> None:
    model = PlantedLinear().eval()
    batches = _positive_batches((8, 16))
    prepared = _prepared(model, _layer_quantizer(per_channel), batches)
    before = _mean_shift(convert_pt2e(prepared), model, batches, axis=1)  # convert copies
    assert before.abs().min() > 100 * TOLERANCE  # the planted error is there, every channel
    assert (before[[0, 2]] > 0).all() and (before[[1, 3]] < 0).all()  # and it has its sign

    report = correct_bias(prepared, batches, sequential=sequential)
    after = _mean_shift(convert_pt2e(prepared), model, batches, axis=1)

    assert after.abs().max() < TOLERANCE
    (layer,) = report
    assert layer.corrected and layer.node == "linear"
    torch.testing.assert_close(layer.shift.double(), before, atol=TOLERANCE, rtol=0)


def test_a_planted_conv2d_shift_is_removed_on_every_channel() -> None:
    model = PlantedConv().eval()
    batches = _positive_batches((2, 2, 6, 6))
    prepared = _prepared(model, _layer_quantizer(True), batches)
    before = _mean_shift(convert_pt2e(prepared), model, batches, axis=1)
    assert before.abs().min() > 100 * TOLERANCE

    report = correct_bias(prepared, batches)
    after = _mean_shift(convert_pt2e(prepared), model, batches, axis=1)

    assert after.abs().max() < TOLERANCE
    assert [layer.corrected for layer in report] == [True]
    assert report[0].op == "aten.conv2d.default"


def test_a_derived_int32_bias_is_quantized_from_the_corrected_value() -> None:
    def bias_spec(x: Node, w: Node, node: Node) -> DerivedQuantizationSpec:
        def derive(observers):
            act_scale, _ = observers[0].calculate_qparams()
            weight_scale, _ = observers[1].calculate_qparams()
            return (act_scale * weight_scale).float().reshape(1), torch.zeros(1, dtype=torch.int32)

        return DerivedQuantizationSpec(
            derived_from=[(x, node), (w, node)],
            derive_qparams_fn=derive,
            dtype=torch.int32,
            quant_min=-(2**31),
            quant_max=2**31 - 1,
            qscheme=torch.per_tensor_symmetric,
        )

    model = PlantedLinear().eval()
    batches = _positive_batches((8, 16))
    prepared = _prepared(model, _layer_quantizer(False, bias_spec=bias_spec), batches)
    report = correct_bias(prepared, batches)
    linear = _layer_nodes(prepared)[0]
    bias_observer = linear.args[2]
    assert bias_observer.op == "call_module"  # the bias is still observed (int32) ...
    assert str(bias_observer.args[0].target) == report[0].bias_attribute  # ... corrected

    converted = convert_pt2e(prepared)
    after = _mean_shift(converted, model, batches, axis=1)
    # the int32 bias rounds by at most half a step of act_scale * w_scale (< 1e-4 here)
    assert after.abs().max() < 1e-4


# --------------------------------------------------------------- the user's tensors stay


def test_the_users_model_exported_program_and_observer_statistics_are_untouched() -> None:
    model = PlantedLinear().eval()
    batches = _positive_batches((8, 16))
    user_bias, user_pointer = model.fc.bias.detach().clone(), model.fc.bias.data_ptr()
    program = torch.export.export(model, batches[0])
    program_bias = program.state_dict["fc.bias"]
    program_copy = program_bias.detach().clone()
    prepared = prepare_pt2e(
        program.module(), XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    )
    for batch in batches:
        prepared(*batch)
    observers = {k: v.clone() for k, v in prepared.state_dict().items() if "post_process" in k}

    report = correct_bias(prepared, batches)

    assert report[0].corrected
    assert torch.equal(model.fc.bias, user_bias) and model.fc.bias.data_ptr() == user_pointer
    assert torch.equal(program.state_dict["fc.bias"], program_copy)
    state = prepared.state_dict()
    assert all(torch.equal(state[k], v) for k, v in observers.items())
    # the corrected bias is a new tensor the graph reads; it differs from the user's
    corrected = getattr(prepared, report[0].bias_attribute)
    assert corrected.data_ptr() != user_pointer and not torch.equal(corrected, user_bias)


# ------------------------------------------------------------------------ with backends


class SmallCNN(nn.Module):
    """x -> conv -> relu -> conv -> relu -> mean(h, w) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.mark.parametrize(
    "make_quantizer",
    [
        lambda: XNNPACKQuantizer().set_global(get_symmetric_quantization_config()),
        lambda: X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()),
    ],
    ids=["xnnpack", "x86_inductor"],
)
@pytest.mark.parametrize("sequential", [False, True], ids=["one_pass", "sequential"])
def test_end_to_end_the_held_out_error_does_not_grow(make_quantizer, sequential: bool) -> None:
    torch.manual_seed(0)
    model = SmallCNN().eval()
    generator = torch.Generator().manual_seed(2)
    calibration = [(torch.randn(4, 3, 8, 8, generator=generator),) for _ in range(6)]
    held_out = [(torch.randn(4, 3, 8, 8, generator=generator),) for _ in range(6)]

    prepared = _prepared(model, make_quantizer(), calibration)
    plain = convert_pt2e(prepared)  # a copy: prepared is still the calibrated model
    report = correct_bias(prepared, calibration, sequential=sequential)
    corrected = convert_pt2e(prepared)

    assert [layer.node for layer in report.corrected] == ["conv2d", "conv2d_1", "linear"]
    # no worse, and here clearly better (by 20 to 45%: the random convs' rounding is biased)
    assert _output_mse(corrected, model, held_out) < _output_mse(plain, model, held_out)
    assert "3 of 3 layers corrected" in report.to_text()


# ------------------------------------------------------------------------ what is skipped


def test_a_layer_without_bias_is_left_as_is_unless_asked() -> None:
    model = nn.Sequential(nn.Linear(16, 4, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.copy_(_planted_weight(4, 16, torch.tensor([0.1, -0.1, 0.1, -0.1])))
    batches = _positive_batches((8, 16))

    prepared = _prepared(model, _layer_quantizer(False), batches)
    (layer,) = correct_bias(prepared, batches)
    assert not layer.corrected and "no bias" in layer.reason
    assert _layer_nodes(prepared)[0].kwargs.get("bias") is None
    assert len(_layer_nodes(prepared)[0].args) == 2

    prepared = _prepared(model, _layer_quantizer(False), batches)
    (layer,) = correct_bias(prepared, batches, add_missing_bias=True)
    assert layer.corrected
    assert str(_layer_nodes(prepared)[0].args[2].target).startswith(CORRECTED_BIAS_PREFIX)
    after = _mean_shift(convert_pt2e(prepared), model, batches, axis=1)
    assert after.abs().max() < TOLERANCE


def test_a_layer_whose_weight_is_not_quantized_is_left_as_is() -> None:
    activation, _ = int8_specs(our_observer)

    def annotate(gm: GraphModule) -> None:
        for node in _layer_nodes(gm):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: activation}, _annotated=True
            )

    batches = _positive_batches((8, 16))
    prepared = _prepared(PlantedLinear(), FunctionQuantizer(annotate), batches)
    (layer,) = correct_bias(prepared, batches)
    assert not layer.corrected and "weight is not integer-quantized" in layer.reason


def test_a_layer_no_batch_reached_is_left_as_is() -> None:
    batches = _positive_batches((8, 16))
    dynamic = ({0: Dim("batch", min=0)},)
    prepared = _prepared(PlantedLinear(), _layer_quantizer(False), batches, dynamic=dynamic)
    bias_before = _layer_nodes(prepared)[0].args[2]

    (layer,) = correct_bias(prepared, [(torch.rand(0, 16),)])

    assert not layer.corrected and layer.reason == "no batch reached it"
    assert _layer_nodes(prepared)[0].args[2] is bias_before


def test_a_non_finite_shift_leaves_the_bias_with_a_warning_naming_the_layer() -> None:
    batches = _positive_batches((8, 16))
    prepared = _prepared(PlantedLinear(), _layer_quantizer(False), batches)
    bias_before = _layer_nodes(prepared)[0].args[2]
    poisoned = batches[0][0].clone()
    poisoned[0, 3] = float("nan")

    with pytest.warns(BiasCorrectionWarning, match="'linear'.*not finite"):
        (layer,) = correct_bias(prepared, [(poisoned,)])

    assert not layer.corrected and "not finite" in layer.reason
    assert _layer_nodes(prepared)[0].args[2] is bias_before


def test_empty_batches_are_refused_naming_the_argument() -> None:
    batches = _positive_batches((8, 16))
    prepared = _prepared(PlantedLinear(), _layer_quantizer(False), batches)
    with pytest.raises(CalibrationError, match="batches is empty"):
        correct_bias(prepared, [])
    with pytest.raises(ValueError, match="batches"):
        correct_bias(prepared, iter(()))


def test_a_batch_the_model_rejects_is_named() -> None:
    batches = _positive_batches((8, 16))
    prepared = _prepared(PlantedLinear(), _layer_quantizer(False), batches)
    with pytest.raises(CalibrationError, match=r"batches\[1\] \(inputs \(8, 5\)\)"):
        correct_bias(prepared, [batches[0], (torch.rand(8, 5),)])


def test_a_qat_prepared_model_is_refused() -> None:
    model = PlantedLinear()
    example = _positive_batches((8, 16), count=1)
    exported = torch.export.export(model.train(), example[0]).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    with pytest.raises(QuantizationError, match="prepared for QAT.*post-training"):
        correct_bias(prepared, example)
