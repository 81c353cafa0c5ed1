"""SmoothQuant: exact in float, the formula on planted cases, kept-float multiplies, accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.algorithms.overrides import OverridingQuantizer
from pt2e_quant.algorithms.smooth_quant import (
    MAX_SMOOTHING_SCALE,
    smooth_quant,
    smoothing_scale,
)
from pt2e_quant.contract.annotation import kept_float_reason
from pt2e_quant.coverage import explain
from pt2e_quant.debug.comparison import compute_sqnr
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.ops.families import LAYER_NORM_OPS, LINEAR_OPS, MUL_OPS
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

# ------------------------------------------------------------------------------ models


class AttentionBlock(nn.Module):
    """x ─ layer_norm ─┬ q ─┐
    ├ k ─┴ softmax(q k^T) ─┐
    └ v ──────────────── @ ─ o ─ add(x) ─ out"""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        scores = self.q(h) @ self.k(h).transpose(-1, -2) / math.sqrt(h.shape[-1])
        return x + self.o(torch.softmax(scores, dim=-1) @ self.v(h))


class Mlp(nn.Module):
    """x ─ up ─ gelu ─ down ─ relu ─ (@ w) ─ mm(w2) ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(8, 32), nn.Linear(32, 8)
        self.w = nn.Parameter(torch.randn(8, 6))
        self.w2 = nn.Parameter(torch.randn(6, 4))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.down(nn.functional.gelu(self.up(x)))) @ self.w
        return torch.mm(y.reshape(-1, 6), self.w2)


class OneLinear(nn.Module):
    """x ─ fc ─ out"""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class OutlierProjection(nn.Module):
    """x ─ layer_norm (gain 30-100x on three channels) ─ fc1 ─ relu ─ fc2 ─ out

    As in transformers, the outlier channels' weights are small (their contribution to
    fc1's output is ordinary) so a per-tensor activation scale wastes its range on them.
    """

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 64), nn.Linear(64, 8)
        gain = torch.tensor([30.0, 60.0, 100.0])
        with torch.no_grad():
            self.norm.weight[[3, 11, 20]] = gain
            self.fc1.weight[:, [3, 11, 20]] /= gain

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(self.norm(x))))


# ----------------------------------------------------------------------------- helpers


def _export(model: nn.Module, *example: Tensor) -> torch.fx.GraphModule:
    return torch.export.export(model.eval(), example).module()


def _batches(shape: tuple[int, ...], count: int = 3) -> list[tuple[Tensor]]:
    return [(torch.randn(shape),) for _ in range(count)]


def _relative_error(reference: Tensor, actual: Tensor) -> float:
    return float((actual - reference).detach().norm() / reference.detach().norm())


def _nodes(gm: torch.fx.GraphModule, ops: frozenset) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in ops]


def _xnnpack(per_channel: bool = True) -> XNNPACKQuantizer:
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    return XNNPACKQuantizer().set_global(config)


# ---------------------------------------------------------------------- exact in float


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("power_of_two", [True, False])
def test_attention_block_outputs_are_unchanged(fold: bool, power_of_two: bool) -> None:
    torch.manual_seed(0)
    model = AttentionBlock()
    x = torch.randn(2, 5, 16)
    gm = _export(model, x)
    reference = gm(x)
    result = smooth_quant(gm, _batches((2, 5, 16)), fold=fold, power_of_two=power_of_two)
    smoothed = {s.activation: s for s in result.smoothed}
    # q/k/v read the layer norm, o reads the attention output
    assert set(smoothed["layer_norm"].consumers) == {"linear", "linear_1", "linear_2"}
    assert any(s.consumers == ("linear_3",) for s in result.smoothed)
    assert (smoothed["layer_norm"].folded_into == "layer_norm") is fold
    assert _relative_error(reference, gm(x)) <= 1e-5
    if power_of_two:  # power-of-two scales are exact in floating point
        assert torch.equal(gm(x), reference)


def test_mlp_outputs_are_unchanged_and_every_weighted_product_is_smoothed() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8) * torch.tensor([1.0] * 7 + [40.0])
    gm = _export(Mlp(), x)
    reference = gm(x)
    result = smooth_quant(gm, [(x,)], power_of_two=False)
    consumers = sorted(c for s in result.smoothed for c in s.consumers)
    assert consumers == ["linear", "linear_1", "matmul", "mm"]
    # the relu's 1/s goes into down's output rows; x, gelu and reshape get a multiply
    assert {s.activation: s.folded_into for s in result.smoothed}["relu"] == "linear_1"
    assert sorted(result.kept_float) == ["gelu_smoothed", "reshape_smoothed", "x_smoothed"]
    assert _relative_error(reference, gm(x)) <= 1e-5


# -------------------------------------------------------------------- the formula itself


def _planted() -> tuple[torch.fx.GraphModule, Tensor, list[tuple[Tensor]]]:
    """Channel 2 of the activation is 50x the others; column maxima of W are 0.4, 3, 1, 4."""
    weight = torch.tensor([[0.4, -3.0, 1.0, 0.25], [0.1, 1.0, -0.5, -4.0]])
    x = torch.tensor([[1.0, -1.0, 50.0, 0.5], [-0.5, 0.25, -10.0, 1.0]])
    return _export(OneLinear(weight), x), weight, [(x,)]


def test_a_planted_outlier_channel_gets_the_hand_computed_scale() -> None:
    gm, weight, batches = _planted()
    result = smooth_quant(gm, batches, alpha=0.5, power_of_two=False)
    activation_max = torch.tensor([1.0, 1.0, 50.0, 1.0])
    weight_max = torch.tensor([0.4, 3.0, 1.0, 4.0])
    by_hand = torch.tensor(
        [math.sqrt(a / w) for a, w in zip(activation_max, weight_max, strict=True)]
    )
    (smoothed,) = result.smoothed
    torch.testing.assert_close(smoothed.scale, by_hand)
    assert math.isclose(float(smoothed.scale[2]), math.sqrt(50.0), rel_tol=1e-6)
    # the new weight is W * s along the input axis; the multiply reads 1/s
    torch.testing.assert_close(gm.fc.weight, weight * by_hand)
    (multiply,) = _nodes(gm, MUL_OPS)
    torch.testing.assert_close(getattr(gm, multiply.args[1].target), 1.0 / by_hand)


def test_power_of_two_scales_round_the_formula_in_the_log_domain() -> None:
    gm, _, batches = _planted()
    (smoothed,) = smooth_quant(gm, batches, alpha=0.5).smoothed
    # sqrt(1/0.4) = 1.58, sqrt(1/3) = 0.58, sqrt(50) = 7.07, sqrt(1/4) = 0.5
    assert smoothed.scale.tolist() == [2.0, 0.5, 8.0, 0.5]


@pytest.mark.parametrize("alpha", [0, 1])
def test_alpha_edges_normalise_the_weights_or_the_activation(alpha: int) -> None:
    gm, weight, batches = _planted()
    x = batches[0][0]
    reference = gm(x)
    (smoothed,) = smooth_quant(gm, batches, alpha=alpha, power_of_two=False).smoothed
    if alpha == 0:  # s = 1 / max|W_j|: every input column of the weight peaks at 1
        torch.testing.assert_close(gm.fc.weight.abs().amax(dim=0), torch.ones(4))
    else:  # s = max|X_j|: every activation channel peaks at 1
        torch.testing.assert_close(smoothed.scale, x.abs().amax(dim=0))
    assert _relative_error(reference, gm(x)) <= 1e-5


def test_siblings_share_one_scale_from_the_max_over_their_weights() -> None:
    torch.manual_seed(0)
    model = AttentionBlock(dim=4)
    with torch.no_grad():
        model.k.weight[:, 1] = 8.0  # k's column 1 dominates q's and v's
    x = torch.randn(1, 3, 4)
    gm = _export(model, x)
    result = smooth_quant(gm, [(x,)], fold=False, power_of_two=False)
    (group,) = [s for s in result.smoothed if s.activation == "layer_norm"]
    (multiply,) = [n for n in gm.graph.nodes if n.name == group.multiply]
    assert sorted(u.name for u in multiply.users) == ["linear", "linear_1", "linear_2"]
    normed = nn.functional.layer_norm(x, (4,), model.norm.weight, model.norm.bias)
    weights = torch.stack([model.q.weight, model.k.weight, model.v.weight])
    weight_max = weights.abs().amax(dim=(0, 1))
    expected = (normed.abs().amax(dim=(0, 1)) / weight_max).sqrt()
    torch.testing.assert_close(group.scale, expected)
    assert math.isclose(float(weight_max[1].detach()), 8.0)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True, None])
def test_alpha_outside_zero_one_or_not_a_number_is_rejected_naming_alpha(alpha: object) -> None:
    gm, _, batches = _planted()
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        smooth_quant(gm, batches, alpha=alpha)  # type: ignore[arg-type]


def test_no_batches_is_rejected_naming_batches() -> None:
    gm, _, _ = _planted()
    with pytest.raises(ValueError, match="batches yielded no batch"):
        smooth_quant(gm, [])


def test_a_batch_the_model_rejects_names_the_batch() -> None:
    gm, _, batches = _planted()
    with pytest.raises(ValueError, match=r"batch 1 with inputs \(\(3, 5\)\) failed"):
        smooth_quant(gm, [batches[0], (torch.randn(3, 5),)])


# ------------------------------------------------------------------------ degenerate data


def test_zero_channels_keep_scale_one() -> None:
    weight = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.0, -1.0]])  # input column 1 is all zero
    x = torch.tensor([[0.0, 3.0, 4.0], [0.0, -1.0, 2.0]])  # channel 0 is all zero
    gm = _export(OneLinear(weight), x)
    (smoothed,) = smooth_quant(gm, [(x,)], power_of_two=False).smoothed
    assert smoothed.scale[0] == 1 and smoothed.scale[1] == 1 and smoothed.scale[2] != 1


def test_non_finite_statistics_warn_and_leave_those_channels_unscaled() -> None:
    gm, _, batches = _planted()
    x = batches[0][0]
    poisoned = x.clone()
    poisoned[0, 1] = float("nan")
    poisoned[1, 3] = float("inf")
    reference = gm(x)
    with pytest.warns(RuntimeWarning, match=r"2 of 4 channels of 'x' \(read by linear\)"):
        (smoothed,) = smooth_quant(gm, [(x,), (poisoned,)]).smoothed
    assert smoothed.scale[1] == 1 and smoothed.scale[3] == 1 and smoothed.scale[2] != 1
    assert torch.equal(gm(x), reference)


def test_smoothing_scale_is_clamped_and_never_overflows_the_dtype() -> None:
    huge = smoothing_scale(torch.tensor([1e30]), torch.tensor([1e-30]), 0.5)
    assert float(huge) == MAX_SMOOTHING_SCALE
    # float16: a weight of 1000 scaled by 128 would overflow 65504, so that channel keeps 1
    limit = torch.finfo(torch.float16).max
    scale = smoothing_scale(
        torch.tensor([2**14, 4.0]), torch.tensor([1000.0, 1.0]), 1.0, limit=limit
    )
    assert scale.tolist() == [1.0, 4.0]


class EmptySlice(nn.Module):
    """x ─ [:, 4:] (empty) ─ fc ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.reshape(2, -1, 4)[:, 4:])


class Branches(nn.Module):
    """x ─ cond(x.sum() > 0, a, b) ─ out: the linears live in the branches' bodies"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(x.sum() > 0, lambda t: self.a(t), lambda t: self.b(t), (x,))


def test_an_activation_never_reached_by_data_is_left_alone() -> None:
    x = torch.randn(2, 16)
    gm = _export(EmptySlice(), x)
    result = smooth_quant(gm, [(x,)])
    assert not result.changed
    assert "never reached" in next(iter(result.skipped.values()))


def test_linears_inside_control_flow_bodies_are_not_smoothed() -> None:
    x = torch.randn(2, 4)
    gm = _export(Branches(), x)
    reference = gm(x)
    result = smooth_quant(gm, [(x,), (-x,)])
    assert not result.changed and result.batches == 0
    assert torch.equal(gm(x), reference)


# ----------------------------------------------------------------- the user's tensors


class TiedProjections(nn.Module):
    """x ─ a ─ relu ─ b ─ out, with b.weight the same Parameter as a.weight"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(x)))


def test_user_tensors_are_never_written_and_tied_weights_each_get_their_own_copy() -> None:
    torch.manual_seed(0)
    model = TiedProjections().eval()
    x = torch.randn(3, 4) * torch.tensor([1.0, 30.0, 1.0, 1.0])
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    gm = _export(model, x)
    reference = gm(x)
    result = smooth_quant(gm, [(x,)], power_of_two=False)
    assert len(result.smoothed) == 2
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    first, second = _nodes(gm, LINEAR_OPS)
    assert first.args[1].target != second.args[1].target  # two scaled copies
    assert _relative_error(reference, gm(x)) <= 1e-5


def test_folding_rebinds_new_norm_tensors_and_leaves_the_user_norm_alone() -> None:
    torch.manual_seed(0)
    model = AttentionBlock(dim=4)
    original = model.norm.weight
    saved = original.detach().clone()
    x = torch.randn(1, 3, 4)
    gm = _export(model, x)
    smooth_quant(gm, [(x,)])
    assert torch.equal(original, saved) and model.norm.weight is original
    assert gm.norm.weight is not original
    assert not _nodes(gm, MUL_OPS)  # no multiply: the norm absorbed 1/s


def test_a_linear_relu_producer_absorbs_one_over_s_in_its_output_rows() -> None:
    torch.manual_seed(0)
    model = OutlierProjection()
    x = torch.randn(2, 6, 32)
    gm = _export(model, x)
    reference = gm(x)
    result = smooth_quant(gm, [(x,)])
    folded = {s.activation: s.folded_into for s in result.smoothed}
    assert folded == {"layer_norm": "layer_norm", "relu": "linear"}
    assert not result.kept_float and not _nodes(gm, MUL_OPS)
    (relu_group,) = [s for s in result.smoothed if s.activation == "relu"]
    expected_rows = model.fc1.weight.detach() / relu_group.scale[:, None]
    # fc1's columns were scaled by the layer norm's group, its rows by the relu's
    (norm_group,) = [s for s in result.smoothed if s.activation == "layer_norm"]
    torch.testing.assert_close(gm.fc1.weight, expected_rows * norm_group.scale)
    assert torch.equal(gm(x), reference)


# -------------------------------------------------------- metadata and the quantizer


def test_the_multiply_takes_the_layers_metadata_and_handles_stay_intact() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    program = torch.export.export(AttentionBlock().eval(), (x,))
    generate_numeric_debug_handle(program)
    gm = program.module()
    handles = {n.name: get_debug_handle(n) for n in gm.graph.nodes}
    result = smooth_quant(gm, [(x,)], fold=False)
    for node in gm.graph.nodes:
        if node.name in handles:
            assert get_debug_handle(node) == handles[node.name]
    multiply = next(n for n in gm.graph.nodes if n.name == result.smoothed[0].multiply)
    first = next(iter(multiply.users))
    assert multiply.meta["nn_module_stack"] == first.meta["nn_module_stack"]
    assert multiply.meta["stack_trace"] == first.meta["stack_trace"]
    assert get_debug_handle(multiply) is None
    assert kept_float_reason(multiply) == (
        "kept float: SmoothQuant's per-channel scaling of linear, linear_1, linear_2"
    )


def test_the_multiply_stays_float_under_xnnpack_and_the_linear_reads_its_quantized_output() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32)
    gm = _export(OutlierProjection(), x)
    result = smooth_quant(gm, [(x,)], fold=False)
    prepared = prepare_pt2e(gm, OverridingQuantizer(_xnnpack()))
    prepared(x)
    converted = convert_pt2e(prepared)
    name = result.smoothed[0].multiply
    multiply = next(n for n in converted.graph.nodes if n.name == name)
    assert multiply.args[0].target in LAYER_NORM_OPS  # its input: the float layer norm
    (quantize,) = multiply.users
    assert is_quantize(quantize)
    (dequantize,) = quantize.users
    (linear,) = dequantize.users
    assert is_dequantize(dequantize) and linear.target in LINEAR_OPS
    rows = {row.node: row for row in explain(converted, _xnnpack()).rows}
    assert not rows[name].quantized and rows[name].reason == result.kept_float[name]


# ------------------------------------------------------------------------------ accuracy


def _static_int8_sqnr(smooth: bool, per_channel: bool) -> float:
    torch.manual_seed(0)
    model = OutlierProjection().eval()
    calibration = _batches((4, 6, 32), count=4)
    test = torch.randn(4, 6, 32)
    gm = _export(model, calibration[0][0])
    if smooth:
        smooth_quant(gm, calibration, alpha=0.5)
    prepared = prepare_pt2e(gm, OverridingQuantizer(_xnnpack(per_channel)))
    for batch in calibration:
        prepared(*batch)
    with torch.no_grad():
        return float(compute_sqnr(model(test), convert_pt2e(prepared)(test)))


@pytest.mark.parametrize("per_channel", [False, True])
def test_smoothing_planted_outliers_raises_static_int8_sqnr_by_12_db(per_channel: bool) -> None:
    # measured at this seed: 5.5 dB without SmoothQuant, 21.9 dB with it (31-36 dB at others)
    plain = _static_int8_sqnr(smooth=False, per_channel=per_channel)
    smoothed = _static_int8_sqnr(smooth=True, per_channel=per_channel)
    assert smoothed >= plain + 12.0, (plain, smoothed)


class BiasIsTheInput(nn.Module):
    """x ─ addmm(x, x, w) ─ out: x is both the bias and the activation"""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 4))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(x, x, self.w)


def test_an_activation_that_is_also_another_argument_of_its_op_is_not_smoothed() -> None:
    x = torch.randn(3, 4) * torch.tensor([1.0, 50.0, 1.0, 1.0])
    gm = _export(BiasIsTheInput(), x)
    result = smooth_quant(gm, [(x,)])
    assert not result.changed and result.batches == 0


class Conv1DProjection(nn.Module):
    """x ─ addmm(b, x, W[in, out]) ─ out (GPT-2's Conv1D)"""

    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x, self.weight)


def test_addmm_weights_are_scaled_along_their_input_rows() -> None:
    torch.manual_seed(0)
    model = Conv1DProjection()
    x = torch.randn(5, 4) * torch.tensor([1.0, 50.0, 1.0, 1.0])
    gm = _export(model, x)
    reference = gm(x)
    (smoothed,) = smooth_quant(gm, [(x,)]).smoothed
    torch.testing.assert_close(gm.weight, model.weight.detach() * smoothed.scale[:, None])
    assert smoothed.scale[1] > smoothed.scale[0]
    assert torch.equal(gm(x), reference)
