"""Range estimation for any quantizer: swap better range observers into its annotations.

A quantizer decides *what* is quantized and with which dtype, range and qscheme; how the range
is measured is the observer's business. :func:`range_estimator_adjustment` returns an
adjustment for :class:`~pt2e_quant.algorithms.overrides.OverridingQuantizer` that, after the
quantizer annotated (and its foreign specs were translated into ours), replaces the observer
constructor of every spec it can improve and keeps everything else of the spec::

    quantizer = OverridingQuantizer(
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config()),
        adjustments=[range_estimator_adjustment(activations="kl", weights="mse")],
    )

Which specs are swapped:

* a plain ``QuantizationSpec`` with an integer dtype, static (not ``is_dynamic``), whose
  observer is one of the stock range observers (min/max, moving-average min/max, histogram;
  ours, torchao's or torch.ao's) or one of our range estimators;
* on a weight (an input edge or output of a value computed from module tensors alone, as
  convert's constant folding sees it): per-tensor specs get the per-tensor estimator,
  per-channel specs its per-channel version;
* on an activation: per-tensor specs only.

Left as the quantizer wrote them: fixed-qparams, shared and derived specs (a derived bias scale
follows the swapped input and weight observers), dynamic, per-group and per-token specs, float
(float16) specs, float-qparams (embedding) specs, per-channel activation specs, fake-quantize
(QAT) constructors and any other observer class (a vendor's own numerics). The spec's dtype,
quant_min/quant_max, qscheme, ch_axis and the keywords its constructor bound (eps,
reduce_range, ...) are kept; equal specs stay equal, so prepare's sharing is unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch.fx import GraphModule

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.contract.specs import QuantizationSpec, is_per_channel
from pt2e_quant.errors import SpecError
from pt2e_quant.graph.constants import foldable_constant_nodes
from pt2e_quant.observer import (
    HistogramObserver,
    KLDivergenceObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    MSEObserver,
    PercentileObserver,
    PerChannelMinMaxObserver,
    PerChannelMSEObserver,
    PerChannelPercentileObserver,
)
from pt2e_quant.observer.range_estimators import check_percentile
from pt2e_quant.observer.range_histogram import check_bins
from pt2e_quant.ops.qdq_ops import is_quantized_dtype
from pt2e_quant.pipeline.observer_factory import observer_class_of

__all__ = [
    "ACTIVATION_ESTIMATORS",
    "WEIGHT_ESTIMATORS",
    "RangeEstimation",
    "range_estimator_adjustment",
]

_OWNER = "range_estimator_adjustment"

#: activation estimator name -> observer class (per-tensor)
_ACTIVATION_CLASSES: dict[str, type] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "kl": KLDivergenceObserver,
}
#: weight estimator name -> (per-tensor class, per-channel class)
_WEIGHT_CLASSES: dict[str, tuple[type, type]] = {
    "minmax": (MinMaxObserver, PerChannelMinMaxObserver),
    "percentile": (PercentileObserver, PerChannelPercentileObserver),
    "mse": (MSEObserver, PerChannelMSEObserver),
}
ACTIVATION_ESTIMATORS = tuple(_ACTIVATION_CLASSES)
WEIGHT_ESTIMATORS = tuple(_WEIGHT_CLASSES)

#: option -> (the estimators it configures, its validator)
_OPTIONS: dict[str, tuple[tuple[str, ...], Any]] = {
    "percentile": (("percentile",), check_percentile),
    "bins": (("percentile", "mse", "kl"), check_bins),
}
#: the option each observer class takes
_CLASS_OPTIONS: dict[type, tuple[str, ...]] = {
    PercentileObserver: ("percentile", "bins"),
    MSEObserver: ("bins",),
    KLDivergenceObserver: ("bins",),
    PerChannelPercentileObserver: ("percentile",),
}

#: classes whose range measurement may be replaced: ours...
_OUR_RANGE_OBSERVERS = frozenset(
    {
        MinMaxObserver,
        MovingAverageMinMaxObserver,
        HistogramObserver,
        PerChannelMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PercentileObserver,
        MSEObserver,
        KLDivergenceObserver,
        PerChannelMSEObserver,
        PerChannelPercentileObserver,
    }
)
#: ...and torchao's / torch.ao's stock classes of the same names (recognised, never imported)
_STOCK_MODULES = frozenset({"torchao.quantization.pt2e.observer", "torch.ao.quantization.observer"})
_STOCK_NAMES = frozenset(
    {
        "MinMaxObserver",
        "MovingAverageMinMaxObserver",
        "HistogramObserver",
        "PerChannelMinMaxObserver",
        "MovingAveragePerChannelMinMaxObserver",
    }
)
#: constructor keywords a swapped-in observer inherits from the one it replaces
_CARRIED = frozenset(
    {"dtype", "qscheme", "reduce_range", "quant_min", "quant_max", "factory_kwargs", "eps"}
)


def _check_name(argument: str, value: Any, choices: tuple[str, ...], extra: str = "") -> None:
    if value is not None and value not in choices:
        raise SpecError(
            f"{_OWNER}: {argument}={value!r} is not an estimator; valid choices: "
            + ", ".join(repr(c) for c in choices)
            + " or None (keep the quantizer's observers)"
            + extra
        )


def _checked_options(
    activations: str | None, weights: str | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    chosen = {activations, weights}
    checked = {}
    for name, value in options.items():
        if name not in _OPTIONS:
            raise SpecError(
                f"{_OWNER}: unknown option {name}={value!r}; valid options: "
                + ", ".join(f"{o} (for {'/'.join(e)})" for o, (e, _) in _OPTIONS.items())
            )
        estimators, check = _OPTIONS[name]
        if not chosen & set(estimators):
            raise SpecError(
                f"{_OWNER}: option {name}={value!r} configures the {'/'.join(estimators)} "
                f"estimator(s), but activations={activations!r} and weights={weights!r} use "
                "none of them"
            )
        checked[name] = check(f"{_OWNER}({name}=...)", value)
    return checked


def _is_swappable(cls: Any) -> bool:
    if cls in _OUR_RANGE_OBSERVERS:
        return True
    return (
        isinstance(cls, type)
        and cls.__module__ in _STOCK_MODULES
        and cls.__qualname__ in _STOCK_NAMES
    )


def _bound_keywords(ctor: Any) -> dict[str, Any]:
    """The keywords a ``with_args`` chain (ours, torchao's or functools.partial) bound; an
    outer binding overrides an inner one."""
    layers = []
    for _ in range(16):
        partial = getattr(ctor, "p", None)
        if not isinstance(partial, functools.partial):
            partial = ctor if isinstance(ctor, functools.partial) else None
        if partial is None:
            break
        layers.append(dict(partial.keywords))
        ctor = partial.func
    bound: dict[str, Any] = {}
    for keywords in reversed(layers):
        bound.update(keywords)
    return bound


class RangeEstimation:
    """The adjustment :func:`range_estimator_adjustment` returns: ``adjustment(gm)`` swaps the
    observers of ``gm``'s annotated specs in place."""

    def __init__(
        self, activations: str | None, weights: str | None, options: Mapping[str, Any]
    ) -> None:
        self.activations = activations
        self.weights = weights
        self.options = dict(options)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{_OWNER}(activations={self.activations!r}, weights={self.weights!r}{extra})"

    def __call__(self, gm: GraphModule) -> None:
        constants = foldable_constant_nodes(gm)
        # One new constructor per (old constructor, new class): specs that were equal stay
        # equal, so prepare still shares one observer between them.
        ctors: dict[tuple[int, type], tuple[Any, Any]] = {}
        for node in gm.graph.nodes:
            annotation = get_annotation(node)
            if annotation is None:
                continue
            for source, spec in list(annotation.input_qspec_map.items()):
                annotation.input_qspec_map[source] = self._adjusted(
                    spec, source in constants, ctors
                )
            if annotation.output_qspec is not None:
                annotation.output_qspec = self._adjusted(
                    annotation.output_qspec, node in constants, ctors
                )

    def _adjusted(self, spec: Any, on_weight: bool, ctors: dict) -> Any:
        """``spec`` with the estimator's observer, or ``spec`` itself when it is not one to
        swap (see the module docstring)."""
        name = self.weights if on_weight else self.activations
        if name is None or type(spec) is not QuantizationSpec or spec.is_dynamic:
            return spec
        if not is_quantized_dtype(spec.dtype):
            return spec
        ctor = spec.observer_or_fake_quant_ctr
        cls = observer_class_of(ctor)
        if not _is_swappable(cls):
            return spec
        bound = _bound_keywords(ctor)
        if bound.get("is_dynamic"):
            return spec
        qscheme = spec.qscheme or bound.get("qscheme")
        if qscheme is None:
            qscheme = torch.per_channel_affine if "PerChannel" in cls.__name__ else None
        if qscheme == torch.per_channel_affine_float_qparams:
            return spec
        per_channel = is_per_channel(qscheme)
        if on_weight:
            target = _WEIGHT_CLASSES[name][1 if per_channel else 0]
        elif per_channel:
            return spec
        else:
            target = _ACTIVATION_CLASSES[name]
        key = (id(ctor), target)
        if key not in ctors:
            keywords = {k: v for k, v in bound.items() if k in _CARRIED}
            if per_channel and "ch_axis" in bound:
                keywords["ch_axis"] = bound["ch_axis"]
            for option in _CLASS_OPTIONS.get(target, ()):
                if option in self.options:
                    keywords[option] = self.options[option]
            ctors[key] = (ctor, target.with_args(**keywords))  # holds ctor: its id stays unique
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctors[key][1])


def range_estimator_adjustment(
    activations: str | None = None, weights: str | None = None, **options: Any
) -> RangeEstimation:
    """An ``OverridingQuantizer`` adjustment measuring ranges with the named estimators.

    ``activations``: ``"minmax"``, ``"percentile"``, ``"mse"`` or ``"kl"``; ``weights``:
    ``"minmax"``, ``"percentile"`` or ``"mse"`` (per-channel weight specs get
    PerChannelMSEObserver / PerChannelPercentileObserver); None keeps the quantizer's own
    observers for that role. ``options``: ``percentile`` (in (50, 100], default 99.99) for the
    percentile estimators, ``bins`` (default 2048) for the histogram-based per-tensor ones.
    Unknown names, options that configure none of the chosen estimators, and bad values raise
    :class:`~pt2e_quant.errors.SpecError` (a ``ValueError``) naming the argument.
    """
    _check_name("activations", activations, ACTIVATION_ESTIMATORS)
    _check_name(
        "weights",
        weights,
        WEIGHT_ESTIMATORS,
        " ('kl' is for activations: a weight is known exactly, so minimise its error with 'mse')"
        if weights == "kl"
        else "",
    )
    return RangeEstimation(activations, weights, _checked_options(activations, weights, options))
