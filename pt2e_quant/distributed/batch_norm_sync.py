"""Batch norm under DDP QAT: each rank's own batch statistics, or the global batch's.

The user chooses, as in eager PyTorch:

* **BatchNorm** (the default; nothing to call): each rank normalises with its local batch's
  statistics and updates its running statistics from them; DDP's ``broadcast_buffers`` then
  copies rank 0's running statistics to every rank at the start of each forward. After the
  last step the ranks' running statistics differ until that next broadcast, so call
  :func:`broadcast_batch_norm_statistics` before ``convert_pt2e`` to convert the same model
  on every rank.
* **SyncBatchNorm**: :func:`synchronize_batch_norm`. An exported graph holds no
  ``SyncBatchNorm`` module: exported without a process group, ``nn.SyncBatchNorm`` traces as
  the plain ``aten.batch_norm`` (its synchronisation is lost), and with one, in training mode
  on CPU, torch refuses to run it at all. So this rewrites every training-mode
  ``aten.batch_norm`` node of the prepared graph into a call of :class:`GlobalBatchNorm`, which
  all-reduces the per-channel sum, sum of squares and count (one autograd-aware all-reduce
  forward, one backward, as SyncBatchNorm's gradients need) and normalises with the global
  mean and biased variance, updating the running statistics as batch norm does (unbiased
  variance, ``momentum``). Two ranks then compute what one process computes on the
  concatenated batch, up to float rounding.

The rewrite keeps each node (name, arguments, users, meta) and only changes what it calls, and
the returned handle's ``remove()`` changes it back. Call it before ``convert_pt2e`` or
``move_exported_model_to_eval``: both look for the ``aten.batch_norm`` node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant.errors import QuantizationError, describe_node, graph_context
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.constants import free_attribute_name
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.graph.training_mode import TRAINING_OVERLOADS, mode_flag
from pt2e_quant.ops.families import BATCH_NORM_OPS, COMPOSITE_BATCH_NORM_OPS, FLAGGED_BATCH_NORM_OPS

__all__ = [
    "BatchNormSyncError",
    "GlobalBatchNorm",
    "BatchNormSync",
    "synchronize_batch_norm",
    "broadcast_batch_norm_statistics",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class BatchNormSyncError(QuantizationError, RuntimeError):
    """A batch norm cannot be synchronised, or its collective failed (a rank was lost)."""


def _sum_over_ranks(tensor: torch.Tensor, group: Any, where: str) -> torch.Tensor:
    total = tensor.clone()
    try:
        dist.all_reduce(total, group=group)
    except RuntimeError as error:
        raise BatchNormSyncError(
            f"{where}: the all-reduce of the batch statistics (or of their gradient) across "
            "ranks failed, so a rank was lost (it raised, exited or stalled past the process "
            "group's timeout) or ran a different forward / backward. The collective said: "
            f"{error}"
        ) from error
    return total


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss depends
    on every rank's sums, so each rank's input gets the gradient summed over all losses (the
    backward SyncBatchNorm computes). Public ``dist.all_reduce`` underneath, not the
    deprecated ``torch.distributed.nn.functional`` wrapper."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any, where: str) -> torch.Tensor:
        ctx.group, ctx.where = group, where
        return _sum_over_ranks(tensor, group, where)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _sum_over_ranks(grad, ctx.group, ctx.where), None, None


class GlobalBatchNorm(nn.Module):
    """Training-mode batch norm over the batches of every rank of ``group``.

    Called with ``aten.batch_norm``'s arguments. The sums are taken around the running mean
    (the same on every rank), which keeps the one-pass variance accurate once the running
    mean has moved near the data's mean. Fewer than two values per channel in the global
    batch raise, as batch norm does; an empty local batch is fine.
    """

    def __init__(self, group: Any, node_name: str) -> None:
        super().__init__()
        self.group = group
        self.node_name = node_name

    def forward(
        self,
        input: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
        cudnn_enabled: bool = True,
    ) -> torch.Tensor:
        if not training and running_mean is not None:
            return nn.functional.batch_norm(
                input, running_mean, running_var, weight, bias, False, momentum, eps
            )
        x = input.float() if input.dtype in _LOW_PRECISION else input
        channels = x.shape[1]
        view = [1, channels] + [1] * (x.dim() - 2)
        dims = [0, *range(2, x.dim())]
        shift = (
            torch.zeros(channels, dtype=x.dtype, device=x.device)
            if running_mean is None
            else running_mean.detach().to(x.dtype).clone()
        )
        centred = x - shift.reshape(view)
        count = torch.tensor([x.numel() / max(channels, 1)], dtype=x.dtype, device=x.device)
        local = torch.cat([centred.sum(dims), centred.square().sum(dims), count])
        total = _SumOverRanks.apply(local, self.group, f"{type(self).__name__} '{self.node_name}'")
        n = total[-1].item()
        if n <= 1:
            raise ValueError(
                f"{type(self).__name__} '{self.node_name}': expected more than 1 value per "
                f"channel in the global training batch, got {int(n)} (input shape "
                f"{tuple(input.shape)} on this rank)"
            )
        centred_mean = total[:channels] / n
        mean = shift + centred_mean
        var = (total[channels : 2 * channels] / n - centred_mean.square()).clamp(min=0)
        out = (x - mean.reshape(view)) * torch.rsqrt(var + eps).reshape(view)
        if weight is not None:
            out = out * weight.reshape(view)
        if bias is not None:
            out = out + bias.reshape(view)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                unbiased = var.detach() * (n / (n - 1))
                running_mean.copy_((1 - momentum) * running_mean + momentum * mean.detach())
                running_var.copy_((1 - momentum) * running_var + momentum * unbiased)
        return out.to(input.dtype)

    def extra_repr(self) -> str:
        return f"node={self.node_name!r}"


@dataclass
class BatchNormSync:
    """The nodes :func:`synchronize_batch_norm` rewrote; ``remove()`` (or leaving a ``with``
    block) turns them back into ``aten.batch_norm``."""

    nodes: tuple[str, ...]
    _rewritten: list[tuple[GraphModule, Node, Any, str]] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        touched: dict[int, GraphModule] = {}
        for gm, node, target, module_name in self._rewritten:
            node.op, node.target = "call_function", target
            delattr(gm, module_name)
            touched[id(gm)] = gm
        for gm in touched.values():
            gm.recompile()
        self._rewritten.clear()

    def __enter__(self) -> BatchNormSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _uses_batch_statistics(node: Node) -> bool:
    """A batch norm normalising with its batch's statistics: in training mode, or without
    running statistics (``track_running_stats=False``), whatever its flag says."""
    if node.op != "call_function":
        return False
    if node.target in TRAINING_OVERLOADS:
        return True
    if node.target in FLAGGED_BATCH_NORM_OPS:
        return mode_flag(node, "training") or argument(node, "running_mean") is None
    return False


def _refuse(node: Node, why: str) -> BatchNormSyncError:
    return BatchNormSyncError(
        f"synchronize_batch_norm: {describe_node(node)} {why}.\n{graph_context(node)}"
    )


def synchronize_batch_norm(model: GraphModule, group: Any = None) -> BatchNormSync:
    """Make every training-mode batch norm of ``model`` normalise with the global batch's
    statistics, as ``nn.SyncBatchNorm`` does (module doc).

    ``model`` is the model ``prepare_qat_pt2e`` returned (before or after wrapping it in DDP);
    ``group`` the process group (default: the world). Batch norms in inference mode are left
    alone. Other spellings of a training batch norm (what ``run_decompositions`` makes of it)
    are refused, naming the node, before anything changes.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise BatchNormSyncError(
            "synchronize_batch_norm: no torch.distributed process group is initialised; call "
            "torch.distributed.init_process_group first"
        )
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    found: list[tuple[GraphModule, Node]] = []
    for gm in iter_graph_modules(model):
        for node in gm.graph.nodes:
            if not _uses_batch_statistics(node):
                continue
            if node.target not in COMPOSITE_BATCH_NORM_OPS:
                raise _refuse(
                    node,
                    "is a training-mode batch norm in a decomposed spelling; synchronise the "
                    "graph torch.export.export(...).module() gives (aten.batch_norm), before "
                    "run_decompositions",
                )
            found.append((gm, node))
    handle = BatchNormSync(tuple(node.name for _, node in found))
    for gm, node in found:
        module_name = free_attribute_name(gm, "global_batch_norm")
        gm.add_submodule(module_name, GlobalBatchNorm(group, node.name))
        handle._rewritten.append((gm, node, node.target, module_name))
        node.op, node.target = "call_module", module_name
    for gm in {id(gm): gm for gm, _ in found}.values():
        gm.recompile()
    return handle


def broadcast_batch_norm_statistics(model: GraphModule, src: int = 0, group: Any = None) -> int:
    """Copy rank ``src``'s running mean / variance of every batch norm to all ranks (what
    DDP's ``broadcast_buffers`` does at each forward), e.g. after the last training step and
    before ``convert_pt2e``. Returns how many tensors were broadcast."""
    sent: dict[int, torch.Tensor] = {}
    for gm in iter_graph_modules(model):
        for node in gm.graph.nodes:
            is_batch_norm = node.op == "call_function" and node.target in BATCH_NORM_OPS
            is_rewritten = node.op == "call_module" and isinstance(
                gm.get_submodule(str(node.target)), GlobalBatchNorm
            )
            if not (is_batch_norm or is_rewritten):
                continue
            for position in (3, 4):  # running_mean, running_var
                stat = node.args[position] if len(node.args) > position else None
                if isinstance(stat, Node) and stat.op == "get_attr":
                    tensor = gm.get_buffer(str(stat.target))
                    sent.setdefault(id(tensor), tensor)
    for tensor in sent.values():
        dist.broadcast(tensor, src=src, group=group)
    return len(sent)
