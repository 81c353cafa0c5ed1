"""Export every observer's state of a model, and merge the states all ranks exported back in.

The exchange is one dictionary per rank, keyed by module name (see
:func:`pt2e_quant.distributed.calibration.sync_observers`, which sends it in one collective).
Merging is split from writing: every observer's merged state is computed and every check made
(same observer names on every rank, same settings, compatible shapes) before the first buffer
is written, so an error leaves every rank's observers as they were.

A rank whose observer has not changed since the last merge (its state's digest is the one the
merge wrote) sends no state: it holds the merged state the changed ranks already include. So
merging twice in a row changes nothing, and observing more on one rank and merging again adds
exactly that rank's new data. Histogram kinds add counts, so when two or more ranks observed
more after a merge, each holds the earlier merged counts once: merging again would count them
twice, and is refused (call the merge once, after all calibration).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pt2e_quant.distributed.collectives import DistributedQuantizationError
from pt2e_quant.distributed.histogram_merge import MergeShapeError
from pt2e_quant.distributed.observer_kinds import (
    MergeKind,
    State,
    kind_of,
    simple_settings,
    supported_kinds,
)
from pt2e_quant.fake_quantize.base import is_observer_or_fake_quant, observer_has_data
from pt2e_quant.fake_quantize.learnable import LearnableFakeQuantize
from pt2e_quant.observer.base import observing
from pt2e_quant.observer.range_histogram import HistogramRangeObserver
from pt2e_quant.passes.insert_observers import OBSERVER_PREFIX

__all__ = [
    "ObserverPayload",
    "check_mergeable",
    "export_observers",
    "find_observers",
    "merge_observers",
    "payload_bytes",
]

#: where an observer remembers the digest of the state the last merge wrote
_SYNCED_DIGEST = "_pt2e_synced_state_digest"


@dataclass(frozen=True)
class ObserverPayload:
    """What one rank sends for one observer (plain tensors and strings: picklable)."""

    kind: str
    settings: dict[str, str]
    #: the statistics, or None when unchanged since the last merge
    state: State | None
    #: whether this observer was merged before on this rank
    merged_before: bool

    @property
    def changed(self) -> bool:
        return self.state is not None


def _is_fake_quant(module: nn.Module) -> bool:
    return isinstance(getattr(module, "activation_post_process", None), nn.Module) and hasattr(
        module, "fake_quant_enabled"
    )


def _observer_of(module: nn.Module) -> nn.Module:
    """The module holding the statistics: a fake-quant's observer, or the observer itself."""
    return module.activation_post_process if _is_fake_quant(module) else module


def find_observers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every observer and fake-quant of ``model`` (not their inner observers), by module name.

    Besides the classes :func:`is_observer_or_fake_quant` knows, a module that prepare
    inserted (named ``activation_post_process_<n>``) counts, so a third-party observer of an
    unknown class is found and refused rather than silently left unmerged.
    """
    found: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if id(child) in seen:
                continue
            full = f"{prefix}{name}"
            if is_observer_or_fake_quant(child) or name.startswith(OBSERVER_PREFIX):
                seen.add(id(child))
                found.append((full, child))
            else:
                visit(child, f"{full}.")

    visit(model, "")
    return found


def _describe(name: str, module: nn.Module) -> str:
    return f"'{name}' ({type(module).__name__}{observing(module)})"


def check_mergeable(model: nn.Module) -> dict[str, MergeKind]:
    """The merge kind of every observer of ``model``; raises
    :class:`DistributedQuantizationError` naming every observer whose state cannot be merged
    (and what can), without touching any state. Cheap: call it before calibrating."""
    kinds: dict[str, MergeKind] = {}
    refused = []
    for name, module in find_observers(model):
        kind = kind_of(_observer_of(module))
        if kind is None:
            observer = _observer_of(module)
            buffers = sorted(n for n, _ in observer.named_buffers(recurse=False))
            refused.append(f"{_describe(name, module)} with buffers {buffers}")
        else:
            kinds[name] = kind
    if refused:
        raise DistributedQuantizationError(
            "these observers keep state that cannot be merged across ranks: "
            + "; ".join(refused)
            + f". Supported: {supported_kinds()}. Use one of them in the quantization spec "
            "for data-parallel calibration, or calibrate in one process."
        )
    return kinds


def _digest(state: State) -> str:
    hasher = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        hasher.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        hasher.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _state_of(observer: nn.Module, kind: MergeKind) -> State:
    return {
        name: getattr(observer, name).detach().cpu().clone()
        for name in kind.state_buffers(observer)
    }


def _settings_of(module: nn.Module, kind: MergeKind) -> dict[str, str]:
    """Plain settings, plus every buffer that is not statistics (eps, fixed scale...)."""
    observer = _observer_of(module)
    settings = {f"observer.{k}": v for k, v in simple_settings(observer).items()}
    statistics = set(kind.state_buffers(observer))
    for name, buffer in observer.named_buffers(recurse=False):
        if name not in statistics:
            settings[f"observer.{name}"] = repr(buffer.detach().cpu().tolist())
    if observer is not module:
        settings.update({f"fake_quant.{k}": v for k, v in simple_settings(module).items()})
    return settings


def export_observers(model: nn.Module) -> dict[str, ObserverPayload]:
    """This rank's payload for every observer of ``model`` (raises like :func:`check_mergeable`)."""
    kinds = check_mergeable(model)
    payloads = {}
    for name, module in find_observers(model):
        kind = kinds[name]
        observer = _observer_of(module)
        state = _state_of(observer, kind)
        recorded = observer.__dict__.get(_SYNCED_DIGEST)
        unchanged = recorded is not None and recorded == _digest(state)
        payloads[name] = ObserverPayload(
            kind=kind.name,
            settings=_settings_of(module, kind),
            state=None if unchanged else state,
            merged_before=recorded is not None,
        )
    return payloads


def _check_same_observers(gathered: list[dict[str, ObserverPayload]]) -> None:
    names = [set(payloads) for payloads in gathered]
    everyone = set().union(*names)
    differences = [
        f"rank {rank} lacks {sorted(everyone - mine)[:5]}"
        for rank, mine in enumerate(names)
        if mine != everyone
    ]
    if differences:
        raise DistributedQuantizationError(
            "ranks hold different observers (" + "; ".join(differences) + "): every rank must "
            "prepare the same model with the same quantizer before calibrating"
        )


def _check_same_settings(name: str, module: nn.Module, payloads: list[ObserverPayload]) -> None:
    reference = payloads[0].settings
    for rank, payload in enumerate(payloads[1:], start=1):
        if payload.settings != reference:
            fields = sorted(
                key
                for key in set(reference) | set(payload.settings)
                if reference.get(key) != payload.settings.get(key)
            )
            shown = ", ".join(
                f"{key}: rank 0 {reference.get(key)}, rank {rank} {payload.settings.get(key)}"
                for key in fields[:4]
            )
            raise DistributedQuantizationError(
                f"observer {_describe(name, module)} is configured differently on rank 0 and "
                f"rank {rank} ({shown}): the ranks run different programs; prepare the same "
                "model with the same quantizer on every rank"
            )


def _merged_state(
    name: str, module: nn.Module, kind: MergeKind, payloads: list[ObserverPayload]
) -> tuple[State | None, tuple[int, ...]]:
    """The state to write (None: leave as is) and the ranks whose state went into it."""
    changed = [rank for rank, payload in enumerate(payloads) if payload.changed]
    if not changed:
        return None, ()
    if kind.additive and len(changed) > 1 and any(p.merged_before for p in payloads):
        raise DistributedQuantizationError(
            f"observer {_describe(name, module)} ({kind.name}) was merged before and then "
            f"observed more data on ranks {changed}: each holds the earlier merged counts, "
            "so merging again would count them twice. Merge histogram observers once, after "
            "all calibration on every rank."
        )
    try:
        merged = kind.merge(_observer_of(module), [payloads[rank].state for rank in changed])
    except MergeShapeError as error:
        raise DistributedQuantizationError(
            f"observer {_describe(name, module)}: {error}"
        ) from error
    return merged, tuple(changed)


def _overwrite(buffer: torch.Tensor, value: torch.Tensor) -> None:
    """``buffer`` takes ``value``'s shape and contents, keeping its own device and dtype."""
    with torch.no_grad():
        buffer.resize_(value.shape)
        buffer.copy_(value.to(device=buffer.device, dtype=buffer.dtype))


def _write(observer: nn.Module, state: State) -> None:
    for name, value in state.items():
        _overwrite(getattr(observer, name), value)
    if isinstance(observer, HistogramRangeObserver):
        observer._observations += 1  # its qparams cache is keyed on this count


def _refresh_fake_quant(module: nn.Module) -> None:
    """Recompute a fake-quant's qparams from its merged observer (buffers only: learned
    qparams are parameters, which DDP keeps equal across ranks)."""
    observer = module.activation_post_process
    if not observer_has_data(observer):  # every mergeable kind shows min/max or says
        return
    if isinstance(module, LearnableFakeQuantize):
        if module.has_observed_data() and int(module.learning_enabled[0]) == 0:
            module.adopt_observer_qparams()
        return
    scale, zero_point = getattr(module, "scale", None), getattr(module, "zero_point", None)
    if not isinstance(scale, torch.Tensor) or isinstance(scale, nn.Parameter):
        return
    new_scale, new_zero_point = module.calculate_qparams()
    _overwrite(scale, new_scale)
    _overwrite(zero_point, new_zero_point)


def merge_observers(
    model: nn.Module, gathered: list[dict[str, ObserverPayload]]
) -> dict[str, tuple[int, ...]]:
    """Write into ``model``'s observers the merge of every rank's payload (rank order).

    Returns, per observer name, the ranks whose state went into the merge (empty when
    nothing changed since the last merge). All checks run before anything is written.
    """
    _check_same_observers(gathered)
    modules = dict(find_observers(model))
    plans: list[tuple[nn.Module, MergeKind, State | None]] = []
    contributors: dict[str, tuple[int, ...]] = {}
    for name, module in modules.items():
        payloads = [payloads_of_rank[name] for payloads_of_rank in gathered]
        _check_same_settings(name, module, payloads)
        kind = kind_of(_observer_of(module))
        assert kind is not None and kind.name == payloads[0].kind  # settings include the class
        merged, contributors[name] = _merged_state(name, module, kind, payloads)
        plans.append((module, kind, merged))
    for module, kind, merged in plans:
        observer = _observer_of(module)
        if merged is not None:
            _write(observer, merged)
            if observer is not module and kind.name != "no_state":
                _refresh_fake_quant(module)
        observer.__dict__[_SYNCED_DIGEST] = _digest(_state_of(observer, kind))
    return contributors


def payload_bytes(payloads: dict[str, Any]) -> int:
    """Bytes of tensor data in one rank's payloads (what the exchange mostly carries)."""
    return sum(
        value.numel() * value.element_size()
        for payload in payloads.values()
        if isinstance(payload, ObserverPayload) and payload.state is not None
        for value in payload.state.values()
    )
