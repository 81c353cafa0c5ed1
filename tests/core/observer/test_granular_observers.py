"""Per-group weight and per-token activation observers (pt2e_quant/observer/granular.py) and
what convert makes of them: the group / token ops XNNPACK's partitioner matches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant import QuantizationAnnotation, QuantizationSpec
from pt2e_quant.contract.annotation import ANNOTATION_KEY
from pt2e_quant.errors import SpecError
from pt2e_quant.observer import PerGroupMinMaxObserver, PerTokenDynamicObserver
from pt2e_quant.ops import qdq_ops

aten = torch.ops.aten


def _int4_observer(group_size: int = 32) -> PerGroupMinMaxObserver:
    return PerGroupMinMaxObserver(
        group_size=group_size, dtype=torch.int8, quant_min=-8, quant_max=7
    )


def test_group_scales_are_amax_over_seven_and_a_half_per_group():
    torch.manual_seed(0)
    weight = torch.randn(6, 64)
    observer = _int4_observer()
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    expected = weight.reshape(6, 2, 32).abs().amax(-1) / 7.5
    assert scale.shape == zero_point.shape == (6, 2)
    assert torch.equal(scale, expected) and not zero_point.any()


def test_group_statistics_survive_a_state_dict_round_trip():
    observer = _int4_observer(16)
    observer(torch.randn(4, 32))
    restored = _int4_observer(16)
    restored.load_state_dict(observer.state_dict())
    assert torch.equal(restored.calculate_qparams()[0], observer.calculate_qparams()[0])


def test_non_finite_weights_are_dropped_per_group():
    weight = torch.ones(2, 8)
    weight[0, 0] = float("nan")
    observer = _int4_observer(4)
    with pytest.warns(UserWarning):
        observer(weight)
    assert torch.equal(observer.calculate_qparams()[0], torch.full((2, 2), 1 / 7.5))


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((6, 40), r"does not divide .* 40 input columns .*\[2, 4, 5, 8, 10, 20, 40\]"),
        ((2, 3, 32), "2-D"),
    ],
)
def test_weights_the_group_size_cannot_split_are_refused(shape, match):
    with pytest.raises(SpecError, match=match):
        _int4_observer()(torch.randn(shape))


def test_bad_configurations_are_refused():
    with pytest.raises(SpecError, match="at least 2"):
        PerGroupMinMaxObserver(group_size=1)
    with pytest.raises(SpecError, match="ch_axis must be 0"):
        PerGroupMinMaxObserver(ch_axis=1)
    with pytest.raises(SpecError, match="int8 -128..127"):
        PerTokenDynamicObserver(dtype=torch.uint8, quant_min=0, quant_max=255)


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 32)

    def forward(self, x):
        return self.linear(x)


class _EightDaFourW:
    """Annotates every linear: per-token dynamic int8 input, int4 per-group weight."""

    def __init__(self, group_size: int = 32) -> None:
        self.activation = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_affine,
            is_dynamic=True,
            observer_or_fake_quant_ctr=PerTokenDynamicObserver,
        )
        self.weight = QuantizationSpec(
            dtype=torch.int8,
            quant_min=-8,
            quant_max=7,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
            observer_or_fake_quant_ctr=PerGroupMinMaxObserver.with_args(group_size=group_size),
        )

    def transform_for_annotation(self, model):
        return model

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                node.meta[ANNOTATION_KEY] = QuantizationAnnotation(
                    {node.args[0]: self.activation, node.args[1]: self.weight}, _annotated=True
                )
        return model

    def validate(self, model):
        pass


def test_convert_emits_the_group_and_token_ops_with_their_schemas():
    torch.manual_seed(0)
    model = _OneLinear().eval()
    x = torch.randn(2, 5, 64)
    exported = torch.export.export(model, (x,)).module()
    prepared = pt2e_quant.prepare_pt2e(exported, _EightDaFourW())
    prepared(x)
    converted = pt2e_quant.convert_pt2e(prepared, fold_quantize=False)
    calls = {n.target: n for n in converted.graph.nodes if n.op == "call_function"}
    for op in (
        qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC,
        qdq_ops.QUANTIZE_PER_TOKEN,
        qdq_ops.DEQUANTIZE_PER_TOKEN,
        qdq_ops.QUANTIZE_PER_CHANNEL_GROUP,
        qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP,
    ):
        assert op in calls, op
    group_dq = calls[qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP]
    assert group_dq.args[3:] == (-8, 7, torch.int8, 32, torch.float32)
    token_dq = calls[qdq_ops.DEQUANTIZE_PER_TOKEN]
    assert token_dq.args[3:] == (-128, 127, torch.int8, torch.float32)
    linear = calls[aten.linear.default]
    assert linear.args[0] is token_dq and linear.args[1] is group_dq
    # int4 weights, int8 tokens: close to the float model, not equal to it
    expected = model(x)
    error = (converted(x) - expected).abs().max()
    assert 0 < error < 0.1 * expected.abs().max()


def test_fold_quantize_stores_int4_groups_and_keeps_only_their_dequantize():
    """The group quantize of a weight is folded into an int8 constant holding -8..7, equal to
    what the op computes; the per-token chain stays (its qparams are chosen at run time)."""
    torch.manual_seed(0)
    model = _OneLinear().eval()
    x = torch.randn(2, 5, 64)
    exported = torch.export.export(model, (x,)).module()
    prepared = pt2e_quant.prepare_pt2e(exported, _EightDaFourW())
    prepared(x)
    unfolded = pt2e_quant.convert_pt2e(prepared, fold_quantize=False)
    folded = pt2e_quant.convert_pt2e(prepared)
    targets = [n.target for n in folded.graph.nodes if n.op == "call_function"]
    assert qdq_ops.QUANTIZE_PER_CHANNEL_GROUP not in targets
    assert targets.count(qdq_ops.QUANTIZE_PER_TOKEN) == 1
    group_dq = next(
        n for n in folded.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP
    )
    stored = getattr(folded, str(group_dq.args[0].target))
    assert stored.dtype == torch.int8 and stored.shape == (32, 64)
    assert int(stored.min()) >= -8 and int(stored.max()) <= 7
    assert torch.equal(folded(x), unfolded(x))


class _Configurable(_EightDaFourW):
    def __init__(self, group_size: int = 32, weight_node=None, static_tokens=False) -> None:
        super().__init__(group_size)
        self.weight_node = weight_node
        if static_tokens:
            self.activation = QuantizationSpec(
                dtype=torch.int8,
                quant_min=-128,
                quant_max=127,
                qscheme=torch.per_tensor_affine,
                observer_or_fake_quant_ctr=PerTokenDynamicObserver,
            )

    def annotate(self, model):
        super().annotate(model)
        if self.weight_node:  # the per-group spec on the activation instead
            for node in model.graph.nodes:
                if node.target == aten.linear.default:
                    node.meta[ANNOTATION_KEY] = QuantizationAnnotation(
                        {node.args[0]: self.weight}, _annotated=True
                    )
        return model


@pytest.mark.parametrize(
    ("quantizer", "match"),
    [
        (
            _Configurable(group_size=24),
            r"groups of 24 .* 64 .*valid group sizes for it: \[2, 4, 8, 16, 32, 64\]",
        ),
        (_Configurable(weight_node=True), r"per-group spec .* \('x' is not a weight\)"),
        (_Configurable(static_tokens=True), r"edge 'x' -> 'linear' cannot build .*is_dynamic=True"),
    ],
    ids=["group-size", "activation", "static-token"],
)
def test_granularity_mistakes_fail_at_prepare_naming_the_node(quantizer, match):
    exported = torch.export.export(_OneLinear().eval(), (torch.randn(2, 64),)).module()
    code = exported.code
    with pytest.raises(pt2e_quant.AnnotationError, match=match):
        pt2e_quant.prepare_pt2e(exported, quantizer)
    assert exported.code == code


def test_an_int4_range_the_dtype_cannot_hold_is_refused():
    with pytest.raises(SpecError, match=r"quant_min=-8 does not fit dtype torch.uint8"):
        QuantizationSpec(
            dtype=torch.uint8,
            quant_min=-8,
            quant_max=7,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
            observer_or_fake_quant_ctr=PerGroupMinMaxObserver,
        )


def test_symmetric_group_zero_points_are_int8_zeros_and_asymmetric_stay_wide():
    weight = torch.randn(4, 64)
    symmetric = _int4_observer()
    symmetric(weight)
    _, zero_point = symmetric.calculate_qparams()
    assert zero_point.dtype == torch.int8 and not zero_point.any()
    asymmetric = PerGroupMinMaxObserver(
        group_size=32,
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_channel_affine,
    )
    asymmetric(weight)
    _, zero_point = asymmetric.calculate_qparams()
    assert zero_point.dtype != torch.int8 and zero_point.max() > 127


def test_qparams_of_many_groups_are_computed_by_row_blocks_with_the_same_result(monkeypatch):
    from pt2e_quant.observer import granular

    weight = torch.randn(37, 64)
    weight[5] = 0.0  # an all-zero row: eps scales
    reference = _int4_observer(16)
    reference(weight)
    expected = reference.calculate_qparams()
    monkeypatch.setattr(granular, "_QPARAM_BLOCK", 8)  # 2 rows of 4 groups per block
    blocked = reference.calculate_qparams()
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(blocked, expected, strict=True))
