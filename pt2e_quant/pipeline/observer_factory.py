"""Turning specs into observer / fake-quant instances, one instance per sharing group.

A plain :class:`QuantizationSpec` calls its ``observer_or_fake_quant_ctr`` with every spec field
as a keyword override, which is how a generic ``default_observer`` becomes a uint8 0..255 one.
Fixed-qparams specs become ``FixedQParamsObserver`` (PTQ) or ``FixedQParamsFakeQuantize`` (QAT).
Derived specs get the instances of the groups they derive from, so those are built first.
A ctor that is exactly one of torchao's stock observer classes builds our counterpart with the
same arguments (``pt2e_quant.observer.stock``): same qparams, faster histogram search.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.fx import GraphModule

from pt2e_quant.contract.foreign import ForeignSpecWarning, is_foreign_class
from pt2e_quant.contract.sharing import (
    SharingGroup,
    SharingPlan,
    _anchor_node,
    describe_edge_or_node,
)
from pt2e_quant.contract.specs import (
    DerivedQuantizationSpec,
    EdgeOrNode,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    is_per_channel,
)
from pt2e_quant.errors import AnnotationError, SpecError, graph_context, warn_user
from pt2e_quant.graph.constants import foldable_constant_nodes
from pt2e_quant.observer.stock import stock_observer
from pt2e_quant.ops.decomposed_kernels import QUANTIZE_INPUT_DTYPES
from pt2e_quant.ops.qdq_ops import is_quantized_dtype
from pt2e_quant.pipeline.granularity_checks import check_granularity

__all__ = ["build_observers", "observer_class_of"]


def observer_class_of(ctor: Any) -> Any:
    """The class a ctor builds, seeing through torch.ao / our ``with_args`` and functools.partial."""
    for _ in range(16):
        inner = getattr(ctor, "p", None)
        if inner is not None and hasattr(inner, "func"):
            ctor = inner.func
        elif isinstance(ctor, functools.partial):
            ctor = ctor.func
        else:
            break
    return ctor


def _ctor_kwargs(spec: QuantizationSpec) -> dict[str, Any]:
    kwargs = {
        "dtype": spec.dtype,
        "quant_min": spec.quant_min,
        "quant_max": spec.quant_max,
        "qscheme": spec.qscheme,
        "is_dynamic": spec.is_dynamic,
    }
    cls = observer_class_of(spec.observer_or_fake_quant_ctr)
    cls_name = getattr(cls, "__name__", "")
    # ch_axis is only understood by per-channel observers. torchao decides by class name alone,
    # which silently drops the axis of a per-channel spec built with a generic FakeQuantize ctor
    # (transposed-conv weights need axis 1); for our classes we also pass it when the spec
    # itself is per-channel. A foreign class gets torchao's rule: its constructor may not take
    # the keyword at all (a vendor's per-block observer), and its numerics are torchao's.
    per_channel_spec = is_per_channel(spec.qscheme) and spec.ch_axis is not None
    if "PerChannel" in cls_name or (per_channel_spec and not is_foreign_class(cls)):
        kwargs["ch_axis"] = spec.ch_axis
    return kwargs


def _build_plain(spec: QuantizationSpec) -> torch.nn.Module:
    ctor = spec.observer_or_fake_quant_ctr
    kwargs = _ctor_kwargs(spec)
    stand_in = stock_observer(ctor, frozenset(kwargs))
    if stand_in is not None:
        return stand_in.build(**kwargs)
    if hasattr(ctor, "with_args"):
        return ctor.with_args(**kwargs)()
    return ctor(**kwargs)


def _build_fixed(spec: FixedQParamsQuantizationSpec, is_qat: bool) -> torch.nn.Module:
    from pt2e_quant.fake_quantize import FixedQParamsFakeQuantize
    from pt2e_quant.observer import FixedQParamsObserver

    observer_ctor = FixedQParamsObserver.with_args(
        scale=spec.scale,
        zero_point=spec.zero_point,
        dtype=spec.dtype,
        qscheme=spec.qscheme,
        # None ranges mean "the dtype's full range"; the observer resolves them.
        quant_min=spec.quant_min,
        quant_max=spec.quant_max,
    )
    if is_qat:
        return FixedQParamsFakeQuantize.with_args(observer=observer_ctor)()
    return observer_ctor()


def _build_derived(spec: DerivedQuantizationSpec, sources: list[Any]) -> torch.nn.Module:
    from pt2e_quant.observer import DerivedObserverOrFakeQuantize

    return DerivedObserverOrFakeQuantize(
        obs_or_fqs=sources,
        derive_qparams_fn=spec.derive_qparams_fn,
        dtype=spec.dtype,
        quant_min=spec.quant_min,
        quant_max=spec.quant_max,
        qscheme=spec.qscheme,
        ch_axis=spec.ch_axis,
    )


def _is_fake_quantize(module: torch.nn.Module) -> bool:
    # Our FakeQuantizeBase and torch.ao's both carry these two switches; observers never do.
    return hasattr(module, "fake_quant_enabled") and hasattr(module, "observer_enabled")


def _check_training_kind(
    module: torch.nn.Module, spec: QuantizationSpec, is_qat: bool, member: EdgeOrNode
) -> bool:
    """A QAT config in a PTQ prepare (or the reverse) is a mix-up worth stopping early.

    Fake-quant modules in ``prepare_pt2e`` would train-simulate nothing and calibrate with
    moving averages; plain observers in ``prepare_qat_pt2e`` pass values through unrounded, so
    training would never see quantization error. Float specs are exempt: they insert nothing.
    So are float-qparams specs (embedding tables, weight-only) under QAT: torchao composes
    ``EmbeddingQuantizer`` with a QAT quantizer this way, the table trains in float and is
    quantized once at convert, and there is no QAT variant of that config to ask for.

    torchao accepts either kind in either prepare (CoreML's post-training specs build
    FakeQuantize modules), so a foreign quantizer's mix is its own choice, with torchao's
    numerics: it is accepted, and the return value (True) asks the caller to say so, once.
    """
    if not is_quantized_dtype(spec.dtype) or _is_fake_quantize(module) == is_qat:
        return False
    if is_qat and getattr(spec, "qscheme", None) == torch.per_channel_affine_float_qparams:
        return False
    if is_foreign_class(observer_class_of(spec.observer_or_fake_quant_ctr)):
        return True
    where = describe_edge_or_node(member)
    kind = type(module).__name__
    if is_qat:
        raise AnnotationError(
            f"prepare_qat_pt2e: the spec on the {where} builds {kind}, an observer, not a "
            "fake-quantize module, so training would never see quantization error. Use a QAT "
            "config (e.g. is_qat=True) or call prepare_pt2e for post-training quantization."
        )
    raise AnnotationError(
        f"prepare_pt2e: the spec on the {where} builds {kind}, a fake-quantize module meant "
        "for quantization-aware training. Call prepare_qat_pt2e, or use a post-training "
        "config (e.g. is_qat=False) with prepare_pt2e."
    )


def _warn_foreign_training_kind(mixed: dict[str, list[str]], is_qat: bool, who: str) -> None:
    """One warning per prepare for every spec a foreign quantizer built of the other kind."""
    if not mixed:
        return
    where = [place for places in mixed.values() for place in places]
    shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
    kinds = ", ".join(sorted(mixed))
    what, effect = (
        ("observers", "their values pass through training unrounded")
        if is_qat
        else ("fake-quantize modules", "calibration also rounds the values they pass on")
    )
    warn_user(
        f"{'prepare_qat_pt2e' if is_qat else 'prepare_pt2e'}: {who} builds {what} ({kinds}) "
        f"for {len(where)} spec(s), on the {shown}. They are used as the quantizer asked, as "
        f"torchao uses them, so {effect}. If that is not what you meant, give the quantizer "
        "its " + ("QAT" if is_qat else "post-training") + " configuration.",
        ForeignSpecWarning,
    )


def _check_value_dtypes(group: SharingGroup) -> None:
    """Fail at prepare, naming the edge, on a value no quantize op can take.

    Otherwise a float64 (or integer) value annotated with an integer spec calibrates or
    trains, then fails deep inside convert (or the first training step) with a kernel's
    dtype assertion that names nothing. Float specs are exempt: they insert casts.
    """
    if not is_quantized_dtype(getattr(group.spec, "dtype", None)):
        return
    for member in group.members:
        value = (member[0] if isinstance(member, tuple) else member).meta.get("val")
        if not isinstance(value, torch.Tensor) or value.dtype in QUANTIZE_INPUT_DTYPES:
            continue
        raise AnnotationError(
            f"The spec on the {describe_edge_or_node(member)} quantizes a {value.dtype} value, "
            "but quantize ops take float32, float16 or bfloat16 values only. Cast the model "
            "to float32 before export (model.float()), or leave this op float (for a built-in "
            "quantizer, give its module a None config: set_module_name(name, None), or "
            "set_module_name_qconfig(name, None) on X86).\n" + graph_context(_anchor_node(member))
        )


class _Builder:
    def __init__(self, gm: GraphModule, plan: SharingPlan, is_qat: bool, who: str) -> None:
        self.gm = gm
        self.plan = plan
        self.is_qat = is_qat
        self.who = who
        self._constants: set | None = None
        self.built: dict[int, torch.nn.Module] = {}
        self.in_progress: set[int] = set()
        #: foreign specs of the other training kind: the class they build -> where
        self.mixed_kind: dict[str, list[str]] = {}

    def constants(self) -> set:
        """The graph's constant nodes (weights and what is computed from them alone)."""
        if self._constants is None:
            self._constants = foldable_constant_nodes(self.gm)
        return self._constants

    def for_group(self, group: SharingGroup) -> torch.nn.Module:
        key = id(group)
        if key in self.built:
            return self.built[key]
        if key in self.in_progress:
            raise AnnotationError(
                "DerivedQuantizationSpecs derive from each other in a cycle, starting at the "
                f"{describe_edge_or_node(group.members[0])}. Derive from observed edges instead.\n"
                + graph_context(_anchor_node(group.members[0]))
            )
        self.in_progress.add(key)
        self.built[key] = self._make(group)
        self.in_progress.discard(key)
        return self.built[key]

    def _make(self, group: SharingGroup) -> torch.nn.Module:
        spec: QuantizationSpecBase = group.spec
        if isinstance(spec, DerivedQuantizationSpec):
            return _build_derived(spec, [self._source(group, s) for s in spec.derived_from])
        if isinstance(spec, FixedQParamsQuantizationSpec):
            return _build_fixed(spec, self.is_qat)
        if isinstance(spec, QuantizationSpec):
            try:
                module = _build_plain(spec)
            except SpecError as error:
                raise AnnotationError(
                    f"{self.who}: the spec on the {describe_edge_or_node(group.members[0])} "
                    f"cannot build its observer: {error}\n"
                    + graph_context(_anchor_node(group.members[0]))
                ) from error
            check_granularity(module, group.members, self.constants, self.who)
            if _check_training_kind(module, spec, self.is_qat, group.members[0]):
                places = self.mixed_kind.setdefault(type(module).__name__, [])
                places.append(describe_edge_or_node(group.members[0]))
            return module
        kind = type(spec)
        raise AnnotationError(
            f"The {describe_edge_or_node(group.members[0])} carries a "
            f"{kind.__module__}.{kind.__qualname__}, which is not a quantization spec "
            "pt2e_quant can read; annotate with QuantizationSpec, FixedQParamsQuantizationSpec, "
            "SharedQuantizationSpec or DerivedQuantizationSpec (torchao's or pt2e_quant's).\n"
            + graph_context(_anchor_node(group.members[0]))
        )

    def _source(self, group: SharingGroup, source: EdgeOrNode) -> torch.nn.Module:
        source_group = self.plan.group_of.get(source)
        if source_group is None:
            raise AnnotationError(
                f"The DerivedQuantizationSpec on the {describe_edge_or_node(group.members[0])} "
                f"derives from the {describe_edge_or_node(source)}, which no annotation "
                "quantizes. Annotate it first or derive from an annotated edge.\n"
                + graph_context(_anchor_node(group.members[0]))
            )
        return self.for_group(source_group)


def build_observers(
    gm: GraphModule, plan: SharingPlan, is_qat: bool, who: str = "the quantizer"
) -> dict[EdgeOrNode, torch.nn.Module]:
    """One observer (PTQ) or fake-quant (QAT) per group, mapped from every member;
    ``who`` (the quantizer, described) is named in warnings."""
    builder = _Builder(gm, plan, is_qat, who)
    device = _model_device(gm)
    mapping: dict[EdgeOrNode, torch.nn.Module] = {}
    for group in plan.groups:
        _check_value_dtypes(group)
        observer = builder.for_group(group)
        for member in group.members:
            mapping[member] = observer
    _warn_foreign_training_kind(builder.mixed_kind, is_qat, who)
    if device is not None:
        for observer in {id(o): o for o in mapping.values()}.values():
            observer.to(device)
    return mapping


def _model_device(gm: GraphModule) -> torch.device | None:
    devices = {t.device for t in gm.parameters()} | {t.device for t in gm.buffers()}
    devices.discard(torch.device("meta"))
    if len(devices) > 1:
        raise AnnotationError(
            f"The model holds tensors on several devices ({sorted(map(str, devices))}); "
            "prepare places observers on the model's device, so move the model to one device."
        )
    return next(iter(devices), None)
