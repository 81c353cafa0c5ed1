"""Rank programs for the DDP QAT tests (children of tests/ranks.py import them by name).

Every rank builds the same model from the same seed, takes its shard of a global batch that
every rank can regenerate, and returns plain tensors; the reference (one process training on
the concatenated batch) is computed on rank 0 only, next to the distributed run.

QatNet::

    x (N, 3, 6, 6) -> conv 3x3 (4 ch) -> batch norm -> relu -> flatten -> linear (16 -> 3)
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
from torch import nn

from pt2e_quant.distributed.batch_norm_sync import (
    broadcast_batch_norm_statistics,
    synchronize_batch_norm,
)
from pt2e_quant.distributed.fake_quant_sync import synchronize_fake_quantize
from pt2e_quant.fake_quantize import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    LearnableFakeQuantize,
    disable_observer,
    enable_observer,
)
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_qat_pt2e
from pt2e_quant.pipeline.train_eval import move_exported_model_to_eval
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

GLOBAL_BATCH = 8
SHAPE = (3, 6, 6)


class QatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class QatNetSyncBatchNorm(QatNet):
    """QatNet with ``nn.SyncBatchNorm``, as a user converts a model for DDP."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.SyncBatchNorm(4)


def _prepared(per_channel: bool, sync_batch_norm_module: bool = False) -> torch.fx.GraphModule:
    """Export (batch dimension dynamic: shards, the reference's global batch and the eval
    input differ) and prepare for QAT with XNNPACK's symmetric preset.

    A model holding ``nn.SyncBatchNorm`` is exported in eval mode: with a process group
    initialised, torch refuses to run SyncBatchNorm in training mode on CPU at all (QAT puts
    the conv-bn back into training mode).
    """
    torch.manual_seed(0)
    model = QatNetSyncBatchNorm() if sync_batch_norm_module else QatNet()
    model.train(not sync_batch_norm_module)
    example = (torch.randn(2, *SHAPE),)
    batch = {0: torch.export.Dim.AUTO}
    exported = torch.export.export(model, example, dynamic_shapes=(batch,)).module()
    config = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=True)
    return prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))


def _global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, *SHAPE, generator=generator) * (1 + step)
    target = torch.randn(GLOBAL_BATCH, 3, generator=generator)
    return x, target


def _shard(t: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    size = t.shape[0] // world_size
    return t[rank * size : (rank + 1) * size]


def _quant_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every fake-quant's qparams and statistics, and the batch norm's running statistics."""
    keep = ("scale", "zero_point", "min_val", "max_val", "running_mean", "running_var")
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(keep)}


def _train(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    states = []
    for x, target in batches:
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        states.append(_quant_state(getattr(model, "module", model)))
    return states


def _converted_output(prepared: torch.fx.GraphModule) -> torch.Tensor:
    converted = move_exported_model_to_eval(convert_pt2e(prepared))
    return converted(torch.linspace(-2, 2, 2 * 3 * 6 * 6).reshape(2, *SHAPE))


#: name -> (per-channel weights, fake-quant sync, batch-norm sync, model holds SyncBatchNorm)
DDP_CONFIGS = {
    "per_tensor": (False, True, True, False),
    "per_channel": (True, True, True, False),
    "plain_batch_norm": (False, True, False, False),
    "exported_sync_batch_norm": (False, True, True, True),
    "unsynchronised": (False, False, False, False),
}


def ddp_qat(rank: int, world_size: int, config: str, steps: int = 3) -> dict[str, Any]:
    """A few DDP QAT steps on this rank's shard; rank 0 also trains the one-process reference.

    Returns the quantization state after every step, the parameters, and the converted
    model's output (after the hooks are removed and, with plain batch norm, rank 0's running
    statistics broadcast).
    """
    per_channel, sync, sync_bn, sync_bn_module = DDP_CONFIGS[config]
    prepared = _prepared(per_channel, sync_bn_module)
    reference = copy.deepcopy(prepared) if rank == 0 else None
    ddp = nn.parallel.DistributedDataParallel(prepared)
    # either order works; per_channel synchronises through the DDP wrapper
    target = ddp if config == "per_channel" else prepared
    fake_quant_sync = synchronize_fake_quantize(target) if sync else None
    batch_norm_sync = synchronize_batch_norm(target) if sync_bn else None
    rewritten = [str(n.target) for n in prepared.graph.nodes if "batch_norm" in n.name]
    batches = [_global_batch(step) for step in range(steps)]
    local = [(_shard(x, rank, world_size), _shard(t, rank, world_size)) for x, t in batches]
    states = _train(ddp, local)
    for handle in (fake_quant_sync, batch_norm_sync):
        if handle is not None:
            handle.remove()
    if not sync_bn:
        broadcast_batch_norm_statistics(prepared)
    result: dict[str, Any] = {
        "states": states,
        "parameters": {k: v.detach().clone() for k, v in prepared.named_parameters()},
        "converted": _converted_output(prepared),
        "synchronized": fake_quant_sync.synchronized if fake_quant_sync else (),
        "skipped": fake_quant_sync.skipped if fake_quant_sync else {},
        "batch_norm_while_synced": rewritten,
        "batch_norm_after_remove": [
            str(n.target) for n in prepared.graph.nodes if "batch_norm" in n.name
        ],
    }
    if reference is not None:
        result["reference_states"] = _train(reference, batches)
        result["reference_parameters"] = {
            k: v.detach().clone() for k, v in reference.named_parameters()
        }
    return result


def ddp_qat_configs(rank: int, world_size: int, configs: tuple[str, ...]) -> dict[str, Any]:
    """:func:`ddp_qat` for several configurations in one process (export warms up once)."""
    return {config: ddp_qat(rank, world_size, config) for config in configs}


# ------------------------------------------------------------------ one fake-quant at a time

#: (name, constructor) of every synchronised kind, per tensor and per channel (axis 1 and -1)
FAKE_QUANT_KINDS = {
    "minmax": lambda: FakeQuantize(
        observer=MinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8
    ),
    "moving_average": lambda: FakeQuantize(
        observer=MovingAverageMinMaxObserver, averaging_constant=0.3
    ),
    "per_channel_axis1": lambda: FakeQuantize(
        observer=PerChannelMinMaxObserver,
        ch_axis=1,
        dtype=torch.qint8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
    ),
    "moving_per_channel_last": lambda: FakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver, ch_axis=2, averaging_constant=0.5
    ),
    "learnable": lambda: LearnableFakeQuantize(
        observer=MovingAverageMinMaxObserver, averaging_constant=0.3
    ),
    "fused": lambda: FusedMovingAvgObsFakeQuantize(averaging_constant=0.3),
    "fused_per_channel_axis1": lambda: FusedMovingAvgObsFakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver,
        ch_axis=1,
        averaging_constant=0.3,
        dtype=torch.qint8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
    ),
}


def _torchao_kinds() -> dict[str, Any]:
    from torchao.quantization.pt2e import fake_quantize as ao_fq
    from torchao.quantization.pt2e import observer as ao_obs

    return {
        "torchao_moving_average": lambda: ao_fq.FakeQuantize(
            observer=ao_obs.MovingAverageMinMaxObserver, averaging_constant=0.3
        ),
        "torchao_per_channel_axis1": lambda: ao_fq.FakeQuantize(
            observer=ao_obs.PerChannelMinMaxObserver,
            ch_axis=1,
            dtype=torch.qint8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_channel_symmetric,
        ),
        "torchao_fused": lambda: ao_fq.FusedMovingAvgObsFakeQuantize(averaging_constant=0.3),
    }


def _degenerate_batches(world_size: int) -> list[list[torch.Tensor]]:
    """Per step, every rank's batch (N, 3, 4): ordinary data, a NaN / Inf on one rank, an
    empty batch on rank 0, and a channel with no finite value anywhere."""
    generator = torch.Generator().manual_seed(7)
    steps = []
    for step in range(5):
        shards = [
            torch.randn(2, 3, 4, generator=generator) * (rank + 1 + step)
            for rank in range(world_size)
        ]
        if step == 1:
            shards[-1][0, 0, 0] = float("nan")
            shards[-1][1, 2, 1] = float("inf")
        if step == 2:
            shards[0] = torch.empty(0, 3, 4)
        if step == 3:
            for shard in shards:
                shard[:, 1, :] = float("nan")
        steps.append(shards)
    return steps


def fake_quant_kinds_match_one_process(rank: int, world_size: int, torchao: bool) -> dict:
    """For each kind: the synchronised module's state and local output after every step, and
    the same module run on the concatenated batches (computed on every rank)."""
    kinds = _torchao_kinds() if torchao else FAKE_QUANT_KINDS
    steps = _degenerate_batches(world_size)
    if torchao:
        steps = [s for i, s in enumerate(steps) if i not in (1, 3)]  # torchao keeps NaNs
    results = {}
    warnings.simplefilter("ignore")
    for name, make in kinds.items():
        torch.manual_seed(0)
        synced, alone = nn.Sequential(make()), nn.Sequential(make())
        handle = synchronize_fake_quantize(synced)
        got, want = [], []
        for shards in steps:
            out = synced(shards[rank])
            full = alone(torch.cat(shards))
            offset = sum(s.shape[0] for s in shards[:rank])
            got.append((_quant_state(synced), out))
            want.append((_quant_state(alone), full[offset : offset + shards[rank].shape[0]]))
        handle.remove()
        results[name] = {"got": got, "want": want, "synchronized": handle.synchronized}
    return results


def single_module_checks(rank: int, world_size: int) -> dict[str, Any]:
    """The checks that need a process group but no DDP training, in one process."""
    return {
        "kinds": fake_quant_kinds_match_one_process(rank, world_size, torchao=False),
        "torchao_kinds": fake_quant_kinds_match_one_process(rank, world_size, torchao=True),
        "collectives": disabled_observers_run_no_collective(rank, world_size),
        "unsupported": unsupported_observer_is_refused(rank, world_size),
    }


def decomposed_batch_norm_is_refused(rank: int, world_size: int) -> tuple[str, str]:
    """A training batch norm in ``run_decompositions``' spelling is refused, naming it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    program = torch.export.export(model, (torch.randn(2, *SHAPE),)).run_decompositions()
    try:
        synchronize_batch_norm(program.module())
    except Exception as error:  # noqa: BLE001 - the test reads its type and message
        return type(error).__name__, str(error)
    return "", ""


def disabled_observers_run_no_collective(rank: int, world_size: int) -> dict[str, int]:
    """Count all-reduces in one forward with observers on, off, and on again after the
    handle's ``remove()`` (no DDP: only ours)."""
    prepared = _prepared(per_channel=True)
    handle = synchronize_fake_quantize(prepared)
    x = _shard(_global_batch(0)[0], rank, world_size)
    real = dist.all_reduce
    counts = {}
    for label in ("observing", "disabled", "removed"):
        if label == "disabled":
            prepared.apply(disable_observer)
        if label == "removed":
            prepared.apply(enable_observer)
            handle.remove()
        calls = []

        def counting(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)  # noqa: B023 - read right after this forward
            return real(*args, **kwargs)

        with mock.patch.object(dist, "all_reduce", counting):
            prepared(x)
        counts[label] = len(calls)
    return counts


def _error_of(call: Any) -> tuple[str, str]:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the test reads its type and message
        return type(error).__name__, str(error)
    return "", ""


def unsupported_observer_is_refused(rank: int, world_size: int) -> dict[str, Any]:
    """A histogram fake-quant is refused (no hook installed); frozen, it is skipped until it is
    re-enabled; and a second synchronisation of one model is refused."""
    model = nn.Sequential(nn.Linear(2, 2), FakeQuantize(observer=HistogramObserver))
    found: dict[str, Any] = {"refused": _error_of(lambda: synchronize_fake_quantize(model))}
    found["hooks_after_refusal"] = len(model[1].activation_post_process._forward_pre_hooks)
    model[1].disable_observer()
    handle = synchronize_fake_quantize(model)
    found["frozen_skipped"] = handle.skipped
    model(torch.randn(3, 2))  # frozen: runs, no collective
    model[1].enable_observer()
    found["re_enabled"] = _error_of(lambda: model(torch.randn(3, 2)))
    found["twice"] = _error_of(lambda: synchronize_fake_quantize(model))
    handle.remove()
    found["after_remove"] = _error_of(lambda: model(torch.randn(3, 2)))
    return found


def rank_one_raises_mid_step(rank: int, world_size: int) -> None:
    """Rank 1 raises inside the second forward, between two synchronised fake-quants."""
    prepared = _prepared(per_channel=False)
    synchronize_fake_quantize(prepared)
    ddp = nn.parallel.DistributedDataParallel(prepared)
    x = _shard(_global_batch(0)[0], rank, world_size)
    ddp(x).sum().backward()
    if rank == 1:

        def planted(module: nn.Module, args: tuple) -> None:
            raise RuntimeError("planted failure on rank 1")

        prepared.activation_post_process_2.register_forward_pre_hook(planted)
    ddp(x).sum().backward()


def step_cost(rank: int, world_size: int, steps: int) -> dict[str, float]:
    """Seconds per DDP QAT step (forward, backward, SGD) without sync, with fake-quant sync,
    and with fake-quant and batch-norm sync; and the number of synchronised modules."""
    x, target = (_shard(t, rank, world_size) for t in _global_batch(0))
    timings = {}
    for label in ("plain", "fake_quant_sync", "fake_quant_and_batch_norm_sync"):
        prepared = _prepared(per_channel=True)
        if label != "plain":
            timings["synchronized_modules"] = len(synchronize_fake_quantize(prepared).synchronized)
        if label == "fake_quant_and_batch_norm_sync":
            synchronize_batch_norm(prepared)
        ddp = nn.parallel.DistributedDataParallel(prepared)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.01)
        for warm_up in (True, False):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(2 if warm_up else steps):
                nn.functional.mse_loss(ddp(x), target).backward()
                optimizer.step()
                optimizer.zero_grad()
        timings[label] = (time.perf_counter() - start) / steps
    return timings


# ------------------------------------------------------------------------------ batch norm


class BatchNormNet(nn.Module):
    """conv -> BatchNorm2d -> relu -> flatten -> linear -> BatchNorm1d (no running stats)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, momentum=0.3)
        self.fc = nn.Linear(4 * 4 * 4, 5)
        self.bn1d = nn.BatchNorm1d(5, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1d(self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)))


def _exported_batch_norm_net() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = BatchNormNet().train()
    batch = {0: torch.export.Dim.AUTO}
    example = (torch.randn(2, *SHAPE),)
    return torch.export.export(model, example, dynamic_shapes=(batch,)).module()


def _batch_norm_step(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    weights = torch.linspace(-1, 1, out.shape[1]).reshape(1, -1)
    (out * weights).sum().backward()
    found = {"out": out.detach(), "input_grad": x.grad}
    found.update({f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()})
    found.update({k: v.clone() for k, v in model.named_buffers() if "running" in k})
    return found


def batch_norm_matches_one_process(rank: int, world_size: int) -> dict[str, Any]:
    """Global batch norm on this rank's shard (rank 0's shard empty in the second step) vs one
    process on the concatenated batch; parameter gradients summed over ranks (the loss is a
    sum). Also reports the graph while synchronised and after ``remove()``."""
    model = _exported_batch_norm_net()
    reference = copy.deepcopy(model)
    handle = synchronize_batch_norm(model)
    structure = {
        "nodes": handle.nodes,
        "while_synced": [
            (n.name, n.op, str(n.target)) for n in model.graph.nodes if "batch_norm" in n.name
        ],
    }
    got, want = [], []
    for step in range(2):
        x = _global_batch(step)[0]
        local = _shard(x, rank, world_size)
        if step == 1 and rank == 0:
            local = local[:0]
        mine = _batch_norm_step(model, local)
        for key in [k for k in mine if k.startswith("grad.")]:
            dist.all_reduce(mine[key])
        model.zero_grad()
        full = x if step == 0 else torch.cat([x[:0], _shard(x, 1, world_size)])
        theirs = _batch_norm_step(reference, full)
        reference.zero_grad()
        offset = rank * (x.shape[0] // world_size) if step == 0 else 0
        for key in ("out", "input_grad"):
            theirs[key] = theirs[key][offset : offset + local.shape[0]]
        got.append(mine)
        want.append(theirs)
    handle.remove()
    structure["after_remove"] = [
        (n.name, n.op, str(n.target)) for n in model.graph.nodes if "batch_norm" in n.name
    ]
    structure["modules_left"] = [n for n, _ in model.named_children() if "global" in n]
    try:
        with synchronize_batch_norm(model):
            model(
                torch.randn(1, *SHAPE) if world_size == 1 or rank == 0 else torch.randn(0, *SHAPE)
            )
        too_few = ("", "")
    except ValueError as error:
        too_few = (type(error).__name__, str(error))
    return {
        "got": got,
        "want": want,
        "structure": structure,
        "too_few": too_few,
        "decomposed": decomposed_batch_norm_is_refused(rank, world_size),
    }


def all_checks(rank: int, world_size: int) -> dict[str, Any]:
    """Everything the two test files read, in one process per rank: each rank pays torch's
    first-export warm-up (over a second) once instead of once per run."""
    return {
        "ddp": ddp_qat_configs(rank, world_size, tuple(DDP_CONFIGS)),
        "modules": single_module_checks(rank, world_size),
        "batch_norm": batch_norm_matches_one_process(rank, world_size),
    }


@functools.cache
def run_all_checks_once() -> list[dict[str, Any]]:
    """:func:`all_checks` on two ranks, run once per pytest process and shared by
    test_fake_quant_sync.py and test_batch_norm_sync.py."""
    from tests.ranks import run_ranks, values

    return values(run_ranks(all_checks, 2))
