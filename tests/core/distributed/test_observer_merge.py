"""The observer merge, rank by rank in one process: each kind's rule against one process over the
concatenated shards (bit for bit where the docs promise it), the checks that refuse a merge
before any state changes, and merging twice."""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.distributed.collectives import DistributedQuantizationError
from pt2e_quant.distributed.observer_merge import (
    check_mergeable,
    export_observers,
    find_observers,
    merge_observers,
)
from pt2e_quant.fake_quantize import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    LearnableFakeQuantize,
)
from pt2e_quant.observer import (
    DerivedObserverOrFakeQuantize,
    FixedQParamsObserver,
    HistogramObserver,
    KLDivergenceObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    PerChannelMinMaxObserver,
    PerChannelMSEObserver,
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    PlaceholderObserver,
)
from tests.core.distributed.calibration_programs import RunningMeanObserver
from tests.core.distributed.merge_helpers import (
    ObserverBank,
    assert_same_state,
    merged_ranks,
    observed,
    single_process,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _batches(seed: int, count: int, scale: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 8, generator=generator) * scale for _ in range(count)]


def _min_max_bank() -> ObserverBank:
    return ObserverBank(
        {
            "per_tensor": MinMaxObserver(),
            "symmetric": MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
            "per_channel": PerChannelMinMaxObserver(ch_axis=1),
            "per_group": PerGroupMinMaxObserver(group_size=4),
            "per_channel_mse": PerChannelMSEObserver(ch_axis=0),
        }
    )


def _nan_and_inf(batch: torch.Tensor) -> torch.Tensor:
    batch = batch.clone()
    batch[0, 0], batch[1, 3], batch[2, 5] = float("nan"), float("inf"), float("-inf")
    return batch


def test_min_max_family_equals_one_process_over_the_shards_bit_for_bit():
    shards = [
        _batches(0, 3),
        [_nan_and_inf(b) for b in _batches(1, 2, scale=3.0)] + [torch.full((4, 8), float("nan"))],
        [],  # a rank that saw nothing: +inf / -inf scalars and empty per-channel buffers
        _batches(3, 1, scale=0.1),
    ]
    ranks = merged_ranks(_min_max_bank, shards)
    reference = single_process(_min_max_bank, shards)
    for module in ranks:
        assert_same_state(module, reference)
        for name, observer in module.observers.items():
            expected = reference.observers[name].calculate_qparams()
            for got, want in zip(observer.calculate_qparams(), expected, strict=True):
                assert torch.equal(got, want), name
    assert bool(torch.isfinite(reference.observers["per_channel"].min_val).all())


def test_a_rank_that_saw_only_non_finite_values_is_an_identity():
    shards = [_batches(0, 2), [torch.full((4, 8), float("nan"))]]
    ranks = merged_ranks(_min_max_bank, shards)
    assert_same_state(ranks[1], observed(_min_max_bank, shards[0]))


def test_no_rank_with_data_leaves_the_never_calibrated_state():
    ranks = merged_ranks(_min_max_bank, [[], []])
    assert_same_state(ranks[0], _min_max_bank())
    assert not ranks[0].observers["per_channel"].has_observed_data()


def _moving_average_bank() -> ObserverBank:
    return ObserverBank(
        {
            "per_tensor": MovingAverageMinMaxObserver(averaging_constant=0.3),
            "per_channel": MovingAveragePerChannelMinMaxObserver(averaging_constant=0.3, ch_axis=1),
        }
    )


def test_moving_average_on_identical_data_is_one_process_over_one_shard():
    shard = _batches(5, 4)
    ranks = merged_ranks(_moving_average_bank, [shard, shard, shard])
    for module in ranks:
        assert_same_state(module, observed(_moving_average_bank, shard))


def test_moving_average_merge_is_the_float64_mean_of_the_ranks_that_saw_data():
    first = _batches(6, 3)
    second = _batches(7, 2, scale=2.0)
    second[0] = second[0].clone()
    second[0][:, 2] = float("nan")  # rank 1's first batch leaves channel 2 unseen...
    second = [second[0]]  # ...and it sees nothing else
    shards = [first, second, []]
    alone = [observed(_moving_average_bank, shard) for shard in shards]
    ranks = merged_ranks(_moving_average_bank, shards)
    low0, low1 = alone[0].observers["per_tensor"].min_val, alone[1].observers["per_tensor"].min_val
    expected = ((low0.double() + low1.double()) / 2).float()
    assert torch.equal(ranks[2].observers["per_tensor"].min_val, expected)
    channel = ranks[0].observers["per_channel"].max_val
    rank0, rank1 = alone[0].observers["per_channel"].max_val, alone[1].observers["per_channel"]
    assert torch.isinf(rank1.max_val[2])
    assert channel[2] == rank0[2]  # only rank 0 saw channel 2
    assert channel[0] == ((rank0[0].double() + rank1.max_val[0].double()) / 2).float()
    assert_same_state(ranks[0], ranks[2])


def _histogram_bank() -> ObserverBank:
    return ObserverBank({"histogram": HistogramObserver(bins=64)})


def test_histogram_ranks_with_the_same_range_add_bin_for_bin_like_one_process():
    batch = _batches(8, 1)
    shards = [batch, batch, batch]
    for module in merged_ranks(_histogram_bank, shards):
        assert_same_state(module, single_process(_histogram_bank, shards))


def test_histogram_shards_whose_first_batch_holds_the_extremes_merge_like_one_process():
    def shard(seed: int) -> list[torch.Tensor]:
        first = torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)).clamp(-4, 4)
        first[0, 0], first[3, 7] = -5.0, 5.0
        return [first, *(b.clamp(-4, 4) for b in _batches(seed + 1, 2))]

    shards = [shard(30), shard(40), shard(50)]
    for module in merged_ranks(_histogram_bank, shards):
        assert_same_state(module, single_process(_histogram_bank, shards))


def test_histogram_merge_keeps_range_and_mass_and_lands_near_one_process():
    shards = [_batches(9, 3), _batches(10, 2, scale=4.0), []]
    ranks = merged_ranks(_histogram_bank, shards)
    reference = single_process(_histogram_bank, shards).observers["histogram"]
    merged = ranks[0].observers["histogram"]
    assert torch.equal(merged.min_val, reference.min_val)
    assert torch.equal(merged.max_val, reference.max_val)
    assert merged.histogram.sum().item() == pytest.approx(4 * 8 * 5, rel=1e-6)
    # Each rank's mass moves by at most a bin or two of the union range, as in one process.
    ours, theirs = merged.histogram.cumsum(0), reference.histogram.cumsum(0)
    padded = torch.nn.functional.pad(theirs, (2, 2), value=0.0)
    padded[-2:] = theirs[-1]
    assert bool((ours >= padded[:-4] - 1e-3).all() and (ours <= padded[4:] + 1e-3).all())
    (scale, _), (want, _) = merged.calculate_qparams(), reference.calculate_qparams()
    assert scale.item() == pytest.approx(want.item(), rel=0.05)
    assert_same_state(ranks[1], ranks[2])


def _estimator_bank(bins: int = 4) -> ObserverBank:
    return ObserverBank(
        {
            "percentile": PercentileObserver(percentile=99.0, bins=bins),
            "mse": MSEObserver(bins=bins),
            "kl": KLDivergenceObserver(bins=bins),
        }
    )


def test_range_estimators_equal_one_process_when_rank_0_starts_the_coarsest_grid():
    shards = [_batches(11, 2, scale=3.0), _batches(12, 3), [], _batches(13, 1, scale=0.5)]
    build = lambda: _estimator_bank(bins=32)  # noqa: E731
    reference = single_process(build, shards)
    for module in merged_ranks(build, shards):
        assert_same_state(module, reference)
        for name, observer in module.observers.items():
            expected = reference.observers[name].calculate_qparams()
            for got, want in zip(observer.calculate_qparams(), expected, strict=True):
                assert torch.equal(got, want), name


def test_range_estimators_merge_onto_the_coarsest_grid_a_rank_started():
    # bins=4: rank 0 starts at width 1/8 ([0, 0.5]); rank 1's first batch [0, 4] starts at
    # width 1. In rank order one process coarsens only to width 1/2 (9 bins fit), so the merge
    # is one process over rank 1's data first: same counts, a coarser grid than rank order.
    shards = [[torch.tensor([0.0, 0.25, 0.5])], [torch.tensor([0.0, 1.0, 2.5, 4.0])]]
    merged = merged_ranks(_estimator_bank, shards)[0]
    rank_order = single_process(_estimator_bank, shards)
    coarse_first = single_process(_estimator_bank, shards[::-1])
    assert_same_state(merged, coarse_first)
    assert merged.observers["mse"].bin_width() == 1.0
    assert rank_order.observers["mse"].bin_width() == 0.5
    assert merged.observers["mse"].histogram.sum() == rank_order.observers["mse"].histogram.sum()


def _fake_quant_bank() -> ObserverBank:
    return ObserverBank(
        {
            "fake_quant": FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=255),
            "fused": FusedMovingAvgObsFakeQuantize(),
            "learnable": LearnableFakeQuantize(observer=MinMaxObserver),
        }
    )


def test_fake_quants_merge_their_observer_and_recompute_their_qparams():
    shards = [_batches(14, 2), _batches(15, 1, scale=5.0)]
    ranks = merged_ranks(_fake_quant_bank, shards)
    reference = single_process(_fake_quant_bank, shards)
    for module in ranks:
        ours, theirs = module.observers["fake_quant"], reference.observers["fake_quant"]
        assert torch.equal(ours.scale, theirs.scale)
        assert torch.equal(ours.zero_point, theirs.zero_point)
        learnable = module.observers["learnable"]
        assert torch.equal(learnable.scale.detach(), reference.observers["learnable"].scale)
        fused = module.observers["fused"]
        scale, zero_point = fused.activation_post_process.calculate_qparams()
        assert torch.equal(fused.scale, scale) and torch.equal(fused.zero_point, zero_point.int())
    assert_same_state(ranks[0], ranks[1])


def _stateless_bank(scale: float = 1.0 / 256) -> ObserverBank:
    source = MinMaxObserver()
    return ObserverBank(
        {
            "fixed": FixedQParamsObserver(scale=scale, zero_point=0),
            "placeholder": PlaceholderObserver(dtype=torch.float16),
            "per_token": PerTokenDynamicObserver(),
            "derived": DerivedObserverOrFakeQuantize(
                torch.int32, [source], lambda obs: obs[0].calculate_qparams()
            ),
        }
    )


def test_observers_without_state_pass_through_when_their_settings_agree():
    ranks = merged_ranks(_stateless_bank, [_batches(16, 1), []])
    assert_same_state(ranks[0], _stateless_bank())


def test_different_settings_on_two_ranks_are_refused_naming_the_observer_and_field():
    ranks = [_stateless_bank(), _stateless_bank(scale=1.0 / 128)]
    gathered = [export_observers(module) for module in ranks]
    with pytest.raises(DistributedQuantizationError, match=r"'observers.fixed'.*observer.scale"):
        merge_observers(ranks[0], gathered)


def test_different_observer_names_are_refused():
    ranks = [_min_max_bank(), ObserverBank({"per_tensor": MinMaxObserver()})]
    gathered = [export_observers(module) for module in ranks]
    with pytest.raises(DistributedQuantizationError, match=r"rank 1 lacks \['observers.per_"):
        merge_observers(ranks[0], gathered)


def test_a_shape_mismatch_refuses_the_merge_before_any_observer_changes():
    ranks = [observed(_min_max_bank, _batches(17, 1)), observed(_min_max_bank, _batches(18, 1))]
    ranks[1].observers["per_channel"].min_val.resize_(3).fill_(0.0)
    before = {k: v.clone() for k, v in ranks[0].state_dict().items()}
    gathered = [export_observers(module) for module in ranks]
    with pytest.raises(DistributedQuantizationError, match=r"'observers.per_channel'.*shapes"):
        merge_observers(ranks[0], gathered)
    after = ranks[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_unknown_observer_is_refused_by_class_and_name_before_anything_runs():
    bank = ObserverBank({"ok": MinMaxObserver(), "odd": RunningMeanObserver()})
    bank.observers["odd"].observed_node = "conv2d"
    with pytest.raises(
        DistributedQuantizationError,
        match=r"'observers.odd' \(RunningMeanObserver of 'conv2d'\) with buffers "
        r"\['running_mean'\].*Supported: .*HistogramObserver",
    ):
        check_mergeable(bank)


def test_modules_prepare_named_as_observers_are_found_whatever_their_class():
    bank = ObserverBank({"a": MinMaxObserver()})
    bank.add_module("activation_post_process_3", torch.nn.Identity())
    names = [name for name, _ in find_observers(bank)]
    assert names == ["observers.a", "activation_post_process_3"]
    with pytest.raises(DistributedQuantizationError, match="'activation_post_process_3'"):
        check_mergeable(bank)


def test_merging_twice_changes_nothing_and_later_data_on_one_rank_is_added_once():
    build = lambda: ObserverBank({**_min_max_bank().observers, **_histogram_bank().observers})  # noqa: E731
    shards = [_batches(19, 2), _batches(20, 2, scale=2.0)]
    ranks = [observed(build, shard) for shard in shards]
    for _ in range(2):
        gathered = [export_observers(module) for module in ranks]
        contributors = [merge_observers(module, gathered) for module in ranks]
    assert contributors[0]["observers.per_tensor"] == ()  # the second merge had nothing new
    assert_same_state(ranks[0], ranks[1])
    extra = _batches(21, 1, scale=9.0)
    ranks[1](extra[0])
    gathered = [export_observers(module) for module in ranks]
    for module in ranks:
        assert merge_observers(module, gathered)["observers.histogram"] == (1,)
    assert_same_state(ranks[0], ranks[1])
    reference = single_process(_min_max_bank, [*shards, extra])
    for name in _min_max_bank().observers:
        assert torch.equal(ranks[0].observers[name].min_val, reference.observers[name].min_val)


def test_histograms_observed_on_two_ranks_after_a_merge_are_not_merged_twice():
    ranks = merged_ranks(_histogram_bank, [_batches(22, 1), _batches(23, 1)])
    for module, batch in zip(ranks, _batches(24, 2), strict=True):
        module(batch)
    gathered = [export_observers(module) for module in ranks]
    with pytest.raises(DistributedQuantizationError, match=r"count them twice"):
        merge_observers(ranks[0], gathered)


@pytest.mark.torchao
def test_torchao_min_max_observers_are_merged_by_shape_bit_for_bit():
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e import observer as torchao_observer

    def bank() -> ObserverBank:
        return ObserverBank(
            {
                "per_tensor": torchao_observer.MinMaxObserver(),
                "per_channel": torchao_observer.PerChannelMinMaxObserver(ch_axis=1),
            }
        )

    shards = [_batches(27, 2), [], _batches(28, 1, scale=4.0)]
    reference = single_process(bank, shards)
    for module in merged_ranks(bank, shards):
        assert type(module.observers["per_tensor"]) is torchao_observer.MinMaxObserver
        assert_same_state(module, reference)


@pytest.mark.torchao
def test_torchao_histogram_and_moving_average_observers_merge_like_ours():
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e import observer as torchao_observer

    def bank(library) -> ObserverBank:
        return ObserverBank(
            {
                "histogram": library.HistogramObserver(bins=64),
                "moving": library.MovingAverageMinMaxObserver(averaging_constant=0.3),
                "fixed": library.FixedQParamsObserver(scale=1.0 / 256, zero_point=0),
            }
        )

    import pt2e_quant.observer as ours

    shards = [_batches(25, 2), _batches(26, 1, scale=3.0)]
    theirs = merged_ranks(lambda: bank(torchao_observer), shards)[0].state_dict()
    expected = merged_ranks(lambda: bank(ours), shards)[0].state_dict()
    assert theirs.keys() == expected.keys()
    for name in theirs:
        assert torch.equal(theirs[name], expected[name]), name
