"""DDP QAT: every rank's fake-quant observers update from the global batch, at every step.

Under ``DistributedDataParallel`` each rank's fake-quants observe only the local batch, so the
ranks fake-quantize with different qparams, and DDP's ``broadcast_buffers`` then overwrites
them all with rank 0's at the next forward: every other rank's statistics are dropped.
:func:`synchronize_fake_quantize` does for fake-quant observers what ``SyncBatchNorm`` does for
batch norm. A forward pre-hook on each min/max observer all-reduces the batch's extremes
(one MIN all-reduce of a ``2 * channels + 1`` float64 vector, see
:mod:`~pt2e_quant.distributed.fake_quant_proxy`) and hands the observer a stand-in tensor whose
(per-channel) min and max are the global ones, so the observer's own update rule runs
unchanged. Its statistics, and so the qparams, are then bit for bit those of one process
observing the concatenated batches of all ranks.

What is synchronised, and how (the kinds are matched by exact class, ours, torch.ao's and
torchao's alike; the library never imports the latter two):

* ``FakeQuantize`` and ``LearnableFakeQuantize`` (while its observer drives the qparams) with
  a ``MinMaxObserver``, ``MovingAverageMinMaxObserver``, ``PerChannelMinMaxObserver`` or
  ``MovingAveragePerChannelMinMaxObserver``: the hook sits on the observer, which these
  modules call with the input whenever observing is on.
* ``FusedMovingAvgObsFakeQuantize``: observation happens inside one fused kernel, so the hook
  on the module first runs the module on the stand-in and drops the output (updating the
  running min/max, scale and zero point exactly as for the global batch), then lets the real
  input through with observation off; the switch is restored after the call, even if it raises.
* Bare min/max observers called by the graph: as for ``FakeQuantize``; the graph still gets
  its real input back.
* Skipped, with no collective: fake-quants whose input is computed from parameters alone
  (weights: under DDP every rank holds the same parameters after each optimizer step, so their
  observers see the same values); ``FixedQParamsFakeQuantize`` and the fixed / placeholder /
  derived observers (no running state); ``WeightFakeQuantize`` and ``PerTokenFakeQuantize``,
  which compute qparams from each call's input and keep nothing; any module whose observer is
  disabled (``disable_observer``), since it is then never called.
* Anything else with running state (e.g. a histogram observer) is refused with
  :class:`UnsupportedFakeQuantizeSyncError` naming the module and listing the kinds above,
  unless its observer is frozen (``disable_observer``): then it is skipped, and re-enabling it
  raises at its next call instead of observing one rank's batch.

Every rank must run the same forward passes with the same observers enabled: each observing
call is a collective. A rank that raises, exits or stalls makes its peers' collective fail (or
time out after the process group's timeout), which surfaces as :class:`FakeQuantizeSyncError`
naming the module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant.distributed.fake_quant_proxy import stand_in_batch, summarize_batch
from pt2e_quant.distributed.observer_kinds import is_stateless_observer
from pt2e_quant.errors import QuantizationError
from pt2e_quant.fake_quantize.base import (
    FakeQuantize,
    FixedQParamsFakeQuantize,
    _foreign_types,
    is_observer_or_fake_quant,
)
from pt2e_quant.fake_quantize.fused import FusedMovingAvgObsFakeQuantize
from pt2e_quant.fake_quantize.granular import PerTokenFakeQuantize, WeightFakeQuantize
from pt2e_quant.fake_quantize.learnable import LearnableFakeQuantize
from pt2e_quant.graph.aten_args import attribute
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.observer.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)

__all__ = [
    "FakeQuantizeSyncError",
    "UnsupportedFakeQuantizeSyncError",
    "FakeQuantizeSync",
    "synchronize_fake_quantize",
]

_TORCH_AO_OBSERVER = "torch.ao.quantization.observer"
_TORCHAO_OBSERVER = "torchao.quantization.pt2e.observer"
_TORCH_AO_FAKE_QUANT = "torch.ao.quantization.fake_quantize"
_TORCHAO_FAKE_QUANT = "torchao.quantization.pt2e.fake_quantize"

SUPPORTED_KINDS = (
    "FakeQuantize / LearnableFakeQuantize / FusedMovingAvgObsFakeQuantize or a bare observer, "
    "with MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver or "
    "MovingAveragePerChannelMinMaxObserver (pt2e_quant's, torch.ao's or torchao's); "
    "FixedQParamsFakeQuantize, WeightFakeQuantize, PerTokenFakeQuantize and placeholder / fixed "
    "/ derived observers need no synchronisation"
)


class FakeQuantizeSyncError(QuantizationError, RuntimeError):
    """A fake-quant's collective failed: a rank raised, exited or stalled."""


class UnsupportedFakeQuantizeSyncError(QuantizationError, TypeError):
    """A fake-quant or observer keeps running state that cannot be synchronised per step."""


def _min_max_observers() -> dict[type, bool]:
    """Exact observer class -> whether it is per channel."""
    per_tensor = ("MinMaxObserver", "MovingAverageMinMaxObserver")
    per_channel = ("PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver")
    kinds: dict[type, bool] = {
        MinMaxObserver: False,
        MovingAverageMinMaxObserver: False,
        PerChannelMinMaxObserver: True,
        MovingAveragePerChannelMinMaxObserver: True,
    }
    for library in (_TORCH_AO_OBSERVER, _TORCHAO_OBSERVER):
        kinds.update(dict.fromkeys(_foreign_types(library, *per_tensor), False))
        kinds.update(dict.fromkeys(_foreign_types(library, *per_channel), True))
    return kinds


def _stateless_fake_quants() -> tuple[type, ...]:
    return (
        FixedQParamsFakeQuantize,
        WeightFakeQuantize,
        PerTokenFakeQuantize,
        *_foreign_types(_TORCH_AO_FAKE_QUANT, "FixedQParamsFakeQuantize"),
        *_foreign_types(_TORCHAO_FAKE_QUANT, "FixedQParamsFakeQuantize"),
    )


def _fused_fake_quants() -> tuple[type, ...]:
    return (
        FusedMovingAvgObsFakeQuantize,
        *_foreign_types(_TORCH_AO_FAKE_QUANT, "FusedMovingAvgObsFakeQuantize"),
        *_foreign_types(_TORCHAO_FAKE_QUANT, "FusedMovingAvgObsFakeQuantize"),
    )


def _observer_calling_fake_quants() -> tuple[type, ...]:
    """Fake-quants that call their ``activation_post_process`` with the input to observe."""
    return (
        FakeQuantize,
        LearnableFakeQuantize,
        *_foreign_types(_TORCH_AO_FAKE_QUANT, "FakeQuantize"),
        *_foreign_types(_TORCHAO_FAKE_QUANT, "FakeQuantize"),
        *_foreign_types(
            "torchao.quantization.pt2e.learnable_fake_quantize", "LearnableFakeQuantize"
        ),
        *_foreign_types("torch.ao.quantization._learnable_fake_quantize", "_LearnableFakeQuantize"),
    )


class _Removable(Protocol):
    def remove(self) -> None: ...


@dataclass
class FakeQuantizeSync:
    """What :func:`synchronize_fake_quantize` did; ``remove()`` (or leaving a ``with`` block)
    takes every hook off again.

    ``synchronized`` names the modules that all-reduce at each observing call; ``skipped``
    maps every other fake-quant / observer to why it needs no collective.
    """

    synchronized: tuple[str, ...]
    skipped: dict[str, str]
    _handles: list[_Removable] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FakeQuantizeSync:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def _where(name: str, module: nn.Module) -> str:
    node = getattr(module, "observed_node", None)
    observed = f" (observing node '{node}')" if node else ""
    return f"{type(module).__name__} '{name}'{observed}"


@dataclass
class _Exchange:
    """One module's collective: its batch's extremes in, the global stand-in batch out."""

    where: str
    per_channel: bool
    ch_axis: int
    group: Any

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """The stand-in for the global batch; None if ``x`` has no channel axis (the observer
        then raises its own error, on every rank alike)."""
        ch_axis: int | None = None
        if self.per_channel:
            if x.dim() == 0 or not -x.dim() <= self.ch_axis < x.dim():
                return None
            ch_axis = self.ch_axis
        summary = summarize_batch(x, ch_axis)
        try:
            dist.all_reduce(summary, op=dist.ReduceOp.MIN, group=self.group)
        except RuntimeError as error:
            raise FakeQuantizeSyncError(
                f"{self.where}: the all-reduce of its batch min/max across ranks failed, so a "
                "rank was lost (it raised, exited or stalled past the process group's timeout) "
                "or ran a different forward. Every rank must run the same forward passes with "
                f"the same observers enabled. The collective said: {error}"
            ) from error
        return stand_in_batch(summary, x, ch_axis)


#: attribute set on every module hooked here while its handle lives, so that a second
#: synchronisation of the same model is refused instead of stacking a second collective
_MARK = "_pt2e_quant_synchronized"


class _Mark:
    """Sets :data:`_MARK` on a module; ``remove()`` clears it (a handle like the hooks')."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        setattr(module, _MARK, True)

    def remove(self) -> None:
        if getattr(self.module, _MARK, False):
            delattr(self.module, _MARK)


def _already_synchronized(module: nn.Module) -> bool:
    return getattr(module, _MARK, False)


def _hook_observer(observer: nn.Module, exchange: _Exchange) -> list[_Removable]:
    """Observe the stand-in instead of the local batch; the caller still gets its input back
    (a bare observer in the graph returns what it observed)."""
    held: list[torch.Tensor] = []

    def swap_in(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        stand_in = exchange(args[0])
        if stand_in is None:
            return None
        held.append(args[0])
        return (stand_in, *args[1:])

    def give_back(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        return held.pop() if held else None

    return [
        observer.register_forward_pre_hook(swap_in),
        observer.register_forward_hook(give_back, always_call=True),
        _Mark(observer),
    ]


def _hook_fused(fake_quant: nn.Module, exchange: _Exchange) -> list[_Removable]:
    """Run the fused kernel on the stand-in (its output is dropped), then let the real input
    through with observation off; the switch comes back after the call, even if it raises."""
    paused: list[bool] = []

    def observe_global(module: nn.Module, args: tuple[Any, ...]) -> None:
        if module.observer_enabled[0] != 1:
            return
        stand_in = exchange(args[0])
        if stand_in is None:
            return
        if stand_in.numel() > 0:
            # With the module's own switches: the kernel computes scale / zero point only
            # when fake quantization is on, as it would for the global batch.
            module.forward(stand_in)
        module.observer_enabled[0] = 0
        paused.append(True)

    def resume(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if paused:
            paused.pop()
            module.observer_enabled[0] = 1

    return [
        fake_quant.register_forward_pre_hook(observe_global),
        fake_quant.register_forward_hook(resume, always_call=True),
        _Mark(fake_quant),
    ]


def _parameter_only_modules(model: nn.Module) -> set[int]:
    """ids of the modules every graph call of which reads a value computed from parameters
    alone (a weight, or a weight times a constant): the same on every rank under DDP.

    A value reading a placeholder or a buffer (e.g. the conv-bn fold's ``running_var``, which
    DDP with ``broadcast_buffers=False`` leaves different per rank) counts as data.
    """
    if not isinstance(model, GraphModule):
        return set()
    parameters = {id(p) for p in model.parameters()}
    verdict: dict[int, bool] = {}
    for gm in iter_graph_modules(model):
        from_parameters: dict[Node, bool] = {}
        for node in gm.graph.nodes:
            inputs = node.all_input_nodes
            if node.op == "placeholder":
                from_parameters[node] = False
            elif node.op == "get_attr":
                from_parameters[node] = id(attribute(gm, str(node.target))) in parameters
            else:
                from_parameters[node] = all(from_parameters.get(n, False) for n in inputs)
            if node.op == "call_module":
                key = id(gm.get_submodule(str(node.target)))
                verdict[key] = verdict.get(key, True) and from_parameters[node]
    return {key for key, weight_only in verdict.items() if weight_only}


def _check_group(group: Any) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise FakeQuantizeSyncError(
            "synchronize_fake_quantize: no torch.distributed process group is initialised; "
            "call torch.distributed.init_process_group (torchrun sets up its environment) "
            "first"
        )
    dist.get_world_size(group)  # raises for a group this rank is not part of


@dataclass
class _Plan:
    synchronized: list[tuple[str, Callable[[], list[_Removable]]]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    guards: list[Callable[[], list[_Removable]]] = field(default_factory=list)


def _guard_frozen(observer: nn.Module, where: str) -> list[_Removable]:
    """A frozen observer of a kind we cannot synchronise: fine until it observes again."""

    def refuse(module: nn.Module, args: tuple[Any, ...]) -> None:
        raise UnsupportedFakeQuantizeSyncError(
            f"{where}: its {type(module).__name__} was re-enabled after "
            "synchronize_fake_quantize skipped it as frozen; it would observe only this "
            f"rank's batch. Supported: {SUPPORTED_KINDS}."
        )

    return [observer.register_forward_pre_hook(refuse), _Mark(observer)]


def _plan_observer(
    plan: _Plan,
    name: str,
    owner: nn.Module,
    observer: Any,
    install: Callable[[_Exchange], list[_Removable]],
    group: Any,
) -> None:
    per_channel = _min_max_observers().get(type(observer))
    where = _where(name, owner)
    if _already_synchronized(observer) or _already_synchronized(owner):
        raise FakeQuantizeSyncError(
            f"synchronize_fake_quantize: {where} is already synchronised; remove() the "
            "first handle before synchronising again"
        )
    if is_stateless_observer(observer):
        plan.skipped[name] = f"{type(observer).__name__} keeps no running statistics"
        return
    frozen = getattr(owner, "observer_enabled", None)
    if per_channel is None and owner is not observer and frozen is not None and frozen[0] == 0:
        plan.skipped[name] = (
            f"{type(observer).__name__} is disabled (frozen); re-enabling it raises"
        )
        plan.guards.append(partial(_guard_frozen, observer, where))
        return
    if per_channel is None:
        raise UnsupportedFakeQuantizeSyncError(
            f"synchronize_fake_quantize: {where} uses {type(observer).__name__}, whose "
            f"running state cannot be merged per step. Supported: {SUPPORTED_KINDS}. Use a "
            "min/max observer for QAT under DDP, or freeze this one (disable_observer) "
            "before synchronising."
        )
    ch_axis = int(getattr(observer, "ch_axis", 0)) if per_channel else 0
    exchange = _Exchange(where, per_channel, ch_axis, group)
    plan.synchronized.append((name, partial(install, exchange)))


def _plan(model: nn.Module, group: Any) -> _Plan:
    plan = _Plan()
    weights = _parameter_only_modules(model)
    owned = {
        id(m.activation_post_process)
        for m in model.modules()
        if isinstance(getattr(m, "activation_post_process", None), nn.Module)
    }
    for name, module in model.named_modules():
        kind = type(module)
        if id(module) in owned or not is_observer_or_fake_quant(module):
            continue
        if id(module) in weights:
            plan.skipped[name] = "reads parameters only (identical on every rank under DDP)"
        elif isinstance(module, _stateless_fake_quants()):
            plan.skipped[name] = f"{kind.__name__} keeps no running statistics"
        elif kind in _fused_fake_quants():
            install = partial(_hook_fused, module)
            _plan_observer(plan, name, module, module.activation_post_process, install, group)
        elif kind in _observer_calling_fake_quants():
            observer = module.activation_post_process
            _plan_observer(plan, name, module, observer, partial(_hook_observer, observer), group)
        elif kind in _min_max_observers() or is_stateless_observer(module):
            _plan_observer(plan, name, module, module, partial(_hook_observer, module), group)
        else:
            raise UnsupportedFakeQuantizeSyncError(
                f"synchronize_fake_quantize: {_where(name, module)} is not a kind whose "
                f"statistics can be synchronised per step. Supported: {SUPPORTED_KINDS}."
            )
    return plan


def synchronize_fake_quantize(model: nn.Module, group: Any = None) -> FakeQuantizeSync:
    """Make every fake-quant observer of ``model`` update from the global batch (module doc).

    ``model`` is the model ``prepare_qat_pt2e`` returned (call before or after wrapping it in
    ``DistributedDataParallel``; the hooks sit on its submodules); ``group`` is the process
    group to synchronise over (default: the whole world). Every module is checked before any
    hook goes on, so an unsupported one leaves the model untouched. Returns a handle whose
    ``remove()`` undoes it, e.g. before evaluating on one rank only.
    """
    _check_group(group)
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    plan = _plan(model, group)
    installs = [install for _, install in plan.synchronized] + plan.guards
    handles = [handle for install in installs for handle in install()]
    names = tuple(name for name, _ in plan.synchronized)
    return FakeQuantizeSync(names, plan.skipped, handles)
