"""Rank programs for test_calibration_distributed.py (children of tests/ranks.py import them).

Every program is deterministic given its arguments, so the parent can rebuild any rank's data.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.distributed.calibration import calibrate_distributed, sync_observers
from pt2e_quant.distributed.observer_merge import find_observers
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    ObserverBase,
)
from pt2e_quant.pipeline.calibration import calibrate
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.distributed.merge_helpers import ObserverBank
from tests.models import ConvWithBNRelu, TwoLinearModule, export_model

_EPS = 2**-12


def quantizer(kind: str) -> XNNPACKQuantizer:
    """XNNPACK static int8, per-channel weights, with the activation observer of ``kind``."""
    base = get_symmetric_quantization_config(is_per_channel=True)
    if kind == "histogram":
        return XNNPACKQuantizer().set_global(base)
    if kind == "minmax":
        activation_ctr = MinMaxObserver.with_args(eps=_EPS)
        weight = base.weight
    elif kind == "moving_average":
        activation_ctr = MovingAverageMinMaxObserver.with_args(eps=_EPS, averaging_constant=0.2)
        weight_ctr = MovingAveragePerChannelMinMaxObserver.with_args(eps=_EPS)
        weight = replace(base.weight, observer_or_fake_quant_ctr=weight_ctr)
    else:
        raise ValueError(kind)
    activation = replace(base.input_activation, observer_or_fake_quant_ctr=activation_ctr)
    config = replace(base, input_activation=activation, output_activation=activation, weight=weight)
    return XNNPACKQuantizer().set_global(config)


_MODELS = {
    "conv": (lambda: ConvWithBNRelu(relu=True), (2, 3, 5, 5)),
    "linear": (TwoLinearModule, (2, 8)),
}


def batches(model: str, seed: int, count: int) -> list[tuple[torch.Tensor]]:
    shape = _MODELS[model][1]
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=generator) * (1 + seed),) for _ in range(count)]


def shards_of(model: str, data: str, shard_sizes: list[int]) -> list[list[tuple[torch.Tensor]]]:
    """Every rank's shard: ``uneven`` (different data and sizes), ``same`` (rank 0's data on
    every rank) or ``same_one_batch`` (one identical batch per rank)."""
    if data == "uneven":
        return [batches(model, rank, size) for rank, size in enumerate(shard_sizes)]
    count = 1 if data == "same_one_batch" else shard_sizes[0]
    return [batches(model, 0, count) for _ in shard_sizes]


def _observer_states(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {k: v.clone() for k, v in module.state_dict().items()}
        for name, module in find_observers(model)
    }


def model_guarantees(
    rank: int, world_size: int, cases: list[tuple[str, str, str]], shard_sizes: list[int]
) -> list[dict[str, Any]]:
    """For each (model, observer kind, data) case: calibrate this rank's shard, merge, convert;
    also calibrate a copy on the reference data in this process (no collective): the
    concatenated shards, or for ``same`` data one shard. Returns outputs and states of both."""
    exported: dict[str, Any] = {}
    results = []
    for model_name, kind, data in cases:
        if model_name not in exported:
            torch.manual_seed(0)
            build, shape = _MODELS[model_name]
            exported[model_name] = export_model(build(), (torch.randn(shape),))
        prepared = prepare_pt2e(copy.deepcopy(exported[model_name]), quantizer(kind))
        shards = shards_of(model_name, data, shard_sizes)
        reference = copy.deepcopy(prepared)
        reference_data = shards[0] if data == "same" else [b for s in shards for b in s]
        calibrate(reference, reference_data, reference_data[0], progress=False)
        report = calibrate_distributed(prepared, shards[rank])
        merged_states = _observer_states(prepared)
        probe = batches(model_name, 99, 1)[0]
        results.append(
            {
                "merged": convert_pt2e(prepared)(*probe),
                "single": convert_pt2e(reference)(*probe),
                "merged_states": merged_states,
                "single_states": _observer_states(reference),
                "batches": report.batches,
            }
        )
    return results


class TinyNet(nn.Module):
    """An observed linear, no export needed (the fault programs are about the exchange).

    ::

        x (2,4) ─ MinMaxObserver ─ Linear(4→3) ─ HistogramObserver(16 bins) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.activation_post_process_0 = MinMaxObserver()
        self.linear = nn.Linear(4, 3)
        self.activation_post_process_1 = HistogramObserver(bins=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation_post_process_1(self.linear(self.activation_post_process_0(x)))


def _tiny_shard(rank: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(rank)
    return [torch.randn(2, 4, generator=generator) for _ in range(2)]


def empty_shard_and_bad_batch(rank: int, world_size: int) -> str:
    """Rank 1 has no data; rank 2's batch has the wrong shape."""
    shard = {1: [], 2: [torch.randn(2, 5)]}.get(rank, _tiny_shard(rank))
    calibrate_distributed(TinyNet(), shard, (torch.randn(2, 4),))
    return "merged"


def rank_1_exits_before_the_merge(rank: int, world_size: int) -> str:
    net = TinyNet()
    calibrate(net, _tiny_shard(rank), (torch.randn(2, 4),), progress=False)
    if rank == 1:
        os._exit(3)
    sync_observers(net)
    return "merged"


def sync_twice(rank: int, world_size: int) -> list[dict[str, dict[str, torch.Tensor]]]:
    """Calibrate, merge, merge again: the states after each merge."""
    net = TinyNet()
    first = calibrate_distributed(net, _tiny_shard(rank), (torch.randn(2, 4),))
    after_first = _observer_states(net)
    second = sync_observers(net)
    assert first.world_size == world_size and second.contributors
    return [after_first, _observer_states(net), second.contributors]


class RunningMeanObserver(ObserverBase):
    """A third-party observer whose state is not min/max-like (a running mean)."""

    def __init__(self) -> None:
        super().__init__(dtype=torch.quint8)
        self.register_buffer("running_mean", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.running_mean.copy_(x.mean())
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([1.0]), torch.tensor([0])


def unknown_observer(rank: int, world_size: int) -> str:
    net = ObserverBank({"mean": RunningMeanObserver()})
    calibrate_distributed(net, _tiny_shard(rank), (torch.randn(2, 4),))
    return "merged"
