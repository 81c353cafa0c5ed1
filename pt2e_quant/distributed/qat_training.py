"""``quantize(qat=True)`` under torch.distributed: the QAT run every rank makes the same way.

Three things must hold on every rank for the ranks to convert to one program:

* the fake-quants observe the global batch at every step
  (:func:`~pt2e_quant.distributed.fake_quant_sync.synchronize_fake_quantize`);
* batch norm follows the user's choice: a model built with ``nn.SyncBatchNorm`` normalises
  with the global batch's statistics
  (:func:`~pt2e_quant.distributed.batch_norm_sync.synchronize_batch_norm`), a plain
  ``BatchNorm`` with each rank's own, as DDP does;
* after training, the state that is still per rank is made common before convert folds it:
  plain batch norms' running statistics come from rank 0 (DDP's ``broadcast_buffers`` rule),
  and every observer is merged once more (a no-op when the steps were synchronised).

``nn.SyncBatchNorm`` itself cannot be exported in training mode under a process group on CPU
(it insists on an accelerator), and without one it exports as a plain batch norm anyway, so
the export sees a copy with each one replaced by a batch norm of the same state, and the
synchronisation is put back on the exported graph.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant.distributed.batch_norm_sync import (
    broadcast_batch_norm_statistics,
    synchronize_batch_norm,
)
from pt2e_quant.distributed.calibration import SyncReport, sync_observers
from pt2e_quant.distributed.fake_quant_sync import synchronize_fake_quantize

__all__ = ["synchronized_qat", "without_sync_batch_norm"]


class _ExportableBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A batch norm of any input rank: what an ``nn.SyncBatchNorm`` is in one process."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"batch norm expects an input of 2 or more dims, got {input.dim()}")


def _plain_copy(sync: nn.SyncBatchNorm) -> _ExportableBatchNorm:
    plain = _ExportableBatchNorm(
        sync.num_features, sync.eps, sync.momentum, sync.affine, sync.track_running_stats
    )
    plain.load_state_dict(sync.state_dict())
    plain.train(sync.training)
    return plain


def without_sync_batch_norm(model: nn.Module) -> tuple[nn.Module, bool]:
    """``(model, False)`` when ``model`` has no ``nn.SyncBatchNorm``; else a deep copy with each
    replaced by a plain batch norm holding the same parameters and statistics, and True.
    The caller's model is never changed."""
    if not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        return model, False
    copied = copy.deepcopy(model)
    for name, module in list(copied.named_modules()):
        if isinstance(module, nn.SyncBatchNorm):
            parent_name, _, child = name.rpartition(".")
            copied.get_submodule(parent_name).add_module(child, _plain_copy(module))
    return copied, True


@contextmanager
def synchronized_qat(prepared: GraphModule, sync_batch_norm: bool) -> Iterator[list[SyncReport]]:
    """Train ``prepared`` inside the block with its fake-quants (and, when ``sync_batch_norm``,
    its batch norms) synchronised across ranks; on leaving, the hooks come off, batch-norm
    statistics and observers are made common, and the merge's report is appended to the
    yielded list. Every rank must enter and leave it the same way."""
    reports: list[SyncReport] = []
    fake_quants = synchronize_fake_quantize(prepared)
    batch_norms = synchronize_batch_norm(prepared) if sync_batch_norm else None
    try:
        yield reports
    finally:
        if batch_norms is not None:
            batch_norms.remove()  # convert looks for aten.batch_norm
        fake_quants.remove()
    if not sync_batch_norm:
        broadcast_batch_norm_statistics(prepared)
    reports.append(sync_observers(prepared))
