"""Per-channel absolute maxima of chosen activations over calibration batches.

SmoothQuant needs ``max |X_j|`` for every channel ``j`` (the last dimension) of each
activation it smooths. The graph is run once per batch by an :class:`torch.fx.Interpreter`
that, after computing a watched node, folds that value into a running ``(channels,)``
maximum and keeps nothing else: the interpreter frees every value after its last use, as the
compiled forward would, so no activation outlives its batch and the graph is left untouched.

The reduction is two passes of ``amax`` / ``amin`` over all but the last dimension (no
``abs()`` copy of the activation). NaN propagates into the channel's maximum and ``inf``
stays ``inf``: the caller decides what a non-finite statistic means. A watched node that is
never computed with any element (an empty tensor in every batch) gets no entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

from pt2e_quant.pipeline.calibration import CalibrationError, as_batch, describe_shapes

__all__ = ["channel_abs_max"]


class _ChannelAbsMaxRecorder(Interpreter):
    """Runs ``gm`` and keeps, per watched node, the running per-channel absolute maximum."""

    def __init__(self, gm: GraphModule, watched: Iterable[Node]) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.watched = set(watched)
        self.maxima: dict[Node, torch.Tensor] = {}

    def run_node(self, n: Node) -> Any:
        result = super().run_node(n)
        if n in self.watched and isinstance(result, torch.Tensor) and result.numel():
            self._record(n, result.detach())
        return result

    def _record(self, node: Node, value: torch.Tensor) -> None:
        dims = tuple(range(value.dim() - 1))
        if dims:
            largest = torch.maximum(value.amax(dim=dims), value.amin(dim=dims).neg())
        else:
            largest = value.abs()
        largest = largest.float()
        previous = self.maxima.get(node)
        # torch.maximum propagates NaN, so one NaN batch marks its channels for good
        self.maxima[node] = largest if previous is None else torch.maximum(previous, largest)


def channel_abs_max(
    gm: GraphModule,
    activations: Iterable[Node],
    batches: Iterable[Any],
    *,
    max_batches: int | None = None,
) -> tuple[dict[Node, torch.Tensor], int]:
    """``({node: max |value| per last-dim channel (float32)}, batches run)``.

    Each item of ``batches`` is the model's positional inputs (a lone tensor is a 1-tuple).
    Raises :class:`~pt2e_quant.pipeline.calibration.CalibrationError` (a ``ValueError``)
    naming ``batches`` when none is given, and naming the batch when the model rejects it.
    """
    recorder = _ChannelAbsMaxRecorder(gm, activations)
    count = 0
    with torch.no_grad():
        for item in batches:
            if max_batches is not None and count >= max_batches:
                break
            batch = as_batch(item)
            try:
                recorder.run(*batch)
            except Exception as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise CalibrationError(
                    f"SmoothQuant's statistics: batch {count} with inputs "
                    f"({describe_shapes(batch)}) failed in the model: {reason}; pass batches "
                    "the exported model accepts"
                ) from error
            count += 1
    if count == 0:
        raise CalibrationError(
            "SmoothQuant needs calibration data, but batches yielded no batch; pass a "
            "non-empty iterable of input tuples (the same data calibration uses)"
        )
    return recorder.maxima, count
