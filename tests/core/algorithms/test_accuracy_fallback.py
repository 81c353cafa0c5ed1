"""accuracy_fallback: the fewest units kept float that reach a target, every candidate verified."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant.algorithms.accuracy_fallback import (
    MetricError,
    TargetNotMetWarning,
    accuracy_fallback,
)
from pt2e_quant.algorithms.overrides import KEPT_FOR_TARGET
from pt2e_quant.coverage import explain
from pt2e_quant.debug.sensitivity import output_sqnr
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config


class PlantedMLP(nn.Module):
    """Four linears; ``bad``'s weight has a few huge entries, so per-tensor int8 crushes the
    rest of it: quantizing ``bad`` costs far more than any other layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(4))
        with torch.no_grad():
            self.layers[1].weight[0, :4] = 60.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


def _setup() -> tuple[torch.fx.GraphModule, list[tuple[torch.Tensor]]]:
    torch.manual_seed(0)
    batches = [(torch.randn(8, 16),) for _ in range(3)]
    gm = torch.export.export(PlantedMLP().eval(), batches[0]).module()
    return gm, batches


def _quantizer() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))


def _quiet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return accuracy_fallback(**kwargs)


@pytest.fixture(scope="module")
def planted():
    gm, batches = _setup()
    full = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches, target=-100.0,
                  progress=False)  # fmt: skip
    return gm, batches, full.chosen.score


def test_a_target_the_full_model_meets_keeps_nothing_float_and_ranks_nothing(planted) -> None:
    gm, batches, full_score = planted
    result = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches,
                    target=full_score - 1, progress=False)  # fmt: skip
    assert result.met and result.float_nodes == () and result.evaluations == 1
    assert len(result.ranking) == 0


def test_the_planted_layer_is_kept_float_and_the_result_verifiably_meets_the_target(
    planted,
) -> None:
    gm, batches, full_score = planted
    target = full_score + 10
    result = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches, target=target,
                    progress=False)  # fmt: skip
    assert result.met
    assert "linear_1" in result.float_nodes
    reference = [gm(*b) for b in batches]
    with torch.no_grad():
        achieved = output_sqnr(reference, [result.module(*b) for b in batches])
    assert achieved >= target and math.isclose(achieved, result.chosen.score, rel_tol=1e-6)
    assert all(c.meets_target == (c.score >= target) for c in result.history)
    rows = {row.node: row for row in explain(result.module, _quantizer()).rows}
    assert rows["linear_1"].reason == KEPT_FOR_TARGET


def test_search_never_keeps_more_float_than_greedy_removal_over_the_same_ranking(planted) -> None:
    gm, batches, full_score = planted
    common = dict(float_model=gm, quantizer=_quantizer(), calibration=batches, progress=False)
    for target in (full_score + 10, full_score + 25):
        greedy = _quiet(**common, target=target, strategy="greedy")
        searched = _quiet(**common, target=target, ranking=greedy.ranking)
        assert greedy.met and searched.met
        assert len(searched.chosen.float_units) <= len(greedy.chosen.float_units)


def test_an_unreachable_target_warns_and_returns_the_best_candidate_tried(planted) -> None:
    gm, batches, full_score = planted
    with pytest.warns(TargetNotMetWarning, match="no candidate reached the target"):
        result = accuracy_fallback(gm, _quantizer(), batches, target=full_score + 500,
                                   max_float_units=1, progress=False)  # fmt: skip
    assert not result.met
    assert result.chosen.score == max(c.score for c in result.history)
    assert len(result.chosen.float_units) <= 1


def test_a_callable_metric_scores_candidates_higher_is_better(planted) -> None:
    gm, batches, _ = planted
    reference = torch.cat([gm(*b) for b in batches])

    def negative_mse(model: torch.fx.GraphModule) -> float:
        with torch.no_grad():
            out = torch.cat([model(*b) for b in batches])
        return -float((out - reference).pow(2).mean())

    full = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches, target=-1e9,
                  metric=negative_mse, progress=False)  # fmt: skip
    result = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches,
                    target=full.chosen.score / 10, metric=negative_mse, progress=False)  # fmt: skip
    assert result.met and result.metric == "negative_mse"
    assert result.chosen.score >= full.chosen.score / 10 and result.float_nodes


@pytest.mark.parametrize(
    "metric, message",
    [(lambda m: 1 / 0, "raised ZeroDivisionError"), (lambda m: float("nan"), "returned nan")],
)
def test_a_metric_that_raises_or_returns_nan_is_named(planted, metric, message) -> None:
    gm, batches, _ = planted
    with pytest.raises(MetricError, match=message):
        accuracy_fallback(gm, _quantizer(), batches, target=1.0, metric=metric, progress=False)


@pytest.mark.parametrize("target", [float("nan"), float("inf"), "20", None])
def test_a_target_that_is_not_a_finite_number_is_refused(planted, target) -> None:
    gm, batches, _ = planted
    with pytest.raises(ValueError, match="target must be a finite number"):
        accuracy_fallback(gm, _quantizer(), batches, target=target, progress=False)


def test_bad_strategy_cap_and_empty_data_are_refused(planted) -> None:
    gm, batches, _ = planted
    with pytest.raises(ValueError, match="strategy"):
        accuracy_fallback(gm, _quantizer(), batches, target=1.0, strategy="random")
    with pytest.raises(ValueError, match="max_float_units"):
        accuracy_fallback(gm, _quantizer(), batches, target=1.0, max_float_units=-1)
    with pytest.raises(ValueError, match="calibration is empty"):
        accuracy_fallback(gm, _quantizer(), [], target=1.0)


class ViewAfterPlanted(nn.Module):
    """The planted linear's output goes through a view sharing its qparams."""

    def __init__(self) -> None:
        super().__init__()
        self.bad, self.head = nn.Linear(16, 16), nn.Linear(16, 16)
        with torch.no_grad():
            self.bad.weight[0, :4] = 60.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bad(x).reshape(8, 4, 4).reshape(8, 16))


def test_a_float_unit_takes_the_ops_sharing_its_output_qparams_along() -> None:
    torch.manual_seed(0)
    batches = [(torch.randn(8, 16),) for _ in range(3)]
    gm = torch.export.export(ViewAfterPlanted().eval(), batches[0]).module()
    full = _quiet(float_model=gm, quantizer=_quantizer(), calibration=batches, target=-100.0,
                  progress=False)  # fmt: skip
    common = dict(float_model=gm, quantizer=_quantizer(), calibration=batches, progress=False)
    searched = _quiet(**common, target=full.chosen.score + 15)
    greedy = _quiet(**common, target=full.chosen.score + 15, strategy="greedy")
    assert searched.met and greedy.met
    views = [n.name for n in gm.graph.nodes if n.target == torch.ops.aten.reshape.default]
    assert views and set(views) <= set(searched.float_nodes)
    assert {"linear", *views} <= set(searched.float_nodes)
    assert len(searched.chosen.float_units) < len(greedy.chosen.float_units)
