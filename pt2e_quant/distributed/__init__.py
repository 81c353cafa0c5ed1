"""Quantize across processes: calibration shards and DDP QAT on torch.distributed.

Several processes (ranks) each see part of the data; each rank's observers see only its own
share. This package merges their statistics with collectives so that every rank ends with the
same observer state, fake-quantizes with the same qparams during QAT, and converts to the same
program. Nothing here runs unless a process group is initialised.
"""

from pt2e_quant.distributed.batch_norm_sync import (
    BatchNormSync,
    BatchNormSyncError,
    GlobalBatchNorm,
    broadcast_batch_norm_statistics,
    synchronize_batch_norm,
)
from pt2e_quant.distributed.calibration import SyncReport, calibrate_distributed, sync_observers
from pt2e_quant.distributed.collectives import DistributedQuantizationError, World, world
from pt2e_quant.distributed.fake_quant_sync import (
    FakeQuantizeSync,
    FakeQuantizeSyncError,
    UnsupportedFakeQuantizeSyncError,
    synchronize_fake_quantize,
)
from pt2e_quant.distributed.launch import joined_from_environment
from pt2e_quant.distributed.observer_merge import check_mergeable

__all__ = [
    "BatchNormSync",
    "BatchNormSyncError",
    "DistributedQuantizationError",
    "FakeQuantizeSync",
    "FakeQuantizeSyncError",
    "GlobalBatchNorm",
    "SyncReport",
    "UnsupportedFakeQuantizeSyncError",
    "World",
    "broadcast_batch_norm_statistics",
    "calibrate_distributed",
    "check_mergeable",
    "joined_from_environment",
    "synchronize_batch_norm",
    "synchronize_fake_quantize",
    "sync_observers",
    "world",
]
