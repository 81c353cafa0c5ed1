"""Observers: modules that watch tensors during calibration and turn what they saw into qparams.

Names and constructor arguments match ``torchao.quantization.pt2e.observer`` (and
``torch.ao.quantization.observer``), so migrating is an import change; for the same arguments and
inputs the statistics and qparams are bit-identical to torch.ao's. Differences are confined to
inputs torch.ao leaves undefined: NaN/Inf values are dropped with a warning, ``None`` constructor
arguments mean "default" (and never erase a ``with_args`` binding), bad ranges raise
``SpecError`` (a ``ValueError``) naming the field, and ``has_observed_data()`` tells whether an
observer was calibrated.

The default constructors below are the same configurations torch.ao ships under these names.
"""

from __future__ import annotations

import torch

from pt2e_quant.observer.base import (
    BoundConstructor,
    NonFiniteObservationWarning,
    ObserverBase,
    UniformQuantizationObserverBase,
    UnsupportedObserverConfigError,
)
from pt2e_quant.observer.channel_clipping import (
    PerChannelMSEObserver,
    PerChannelPercentileObserver,
)
from pt2e_quant.observer.granular import PerGroupMinMaxObserver, PerTokenDynamicObserver
from pt2e_quant.observer.histogram import HistogramObserver
from pt2e_quant.observer.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from pt2e_quant.observer.passthrough import (
    DerivedObserverOrFakeQuantize,
    FixedQParamsObserver,
    PlaceholderObserver,
)
from pt2e_quant.observer.range_estimators import (
    KLDivergenceObserver,
    MSEObserver,
    PercentileObserver,
)
from pt2e_quant.observer.range_histogram import DegenerateObservationWarning

__all__ = [
    "ObserverBase",
    "UniformQuantizationObserverBase",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "HistogramObserver",
    "PerGroupMinMaxObserver",
    "PerTokenDynamicObserver",
    "PercentileObserver",
    "MSEObserver",
    "KLDivergenceObserver",
    "PerChannelMSEObserver",
    "PerChannelPercentileObserver",
    "PlaceholderObserver",
    "FixedQParamsObserver",
    "DerivedObserverOrFakeQuantize",
    "BoundConstructor",
    "NonFiniteObservationWarning",
    "DegenerateObservationWarning",
    "UnsupportedObserverConfigError",
    "default_observer",
    "default_weight_observer",
    "default_per_channel_weight_observer",
    "default_histogram_observer",
    "default_placeholder_observer",
    "default_dynamic_quant_observer",
    "default_float_qparams_observer",
    "weight_observer_range_neg_127_to_127",
    "per_channel_weight_observer_range_neg_127_to_127",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_fixed_qparams_range_0to1_observer",
]

#: MinMax over 0..127, torch.ao's debugging default (PT2E specs override dtype and range).
default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)

#: Symmetric signed 8-bit weights, one range for the whole tensor.
default_weight_observer = MinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_tensor_symmetric
)

#: Symmetric signed 8-bit weights with one range per output channel.
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric
)

#: Activations by error minimisation over a histogram (0..127, like torch.ao's).
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)

#: Float16 / float32 casts need no statistics.
default_placeholder_observer = PlaceholderObserver

#: Dynamic activation quantization: qparams are chosen from each input at run time.
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True
)

#: Per-row float scale and float zero point (embedding tables).
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=torch.quint8, qscheme=torch.per_channel_affine_float_qparams, ch_axis=0
)

#: Symmetric int8 weights that never use -128, so negation cannot overflow.
weight_observer_range_neg_127_to_127 = MinMaxObserver.with_args(
    dtype=torch.qint8,
    qscheme=torch.per_tensor_symmetric,
    quant_min=-127,
    quant_max=127,
    eps=2**-12,
)

#: Per-channel version of :data:`weight_observer_range_neg_127_to_127`.
per_channel_weight_observer_range_neg_127_to_127 = PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8,
    qscheme=torch.per_channel_symmetric,
    quant_min=-127,
    quant_max=127,
    eps=2**-12,
)

#: Outputs known to lie in [-1, 1] (tanh).
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=torch.quint8, quant_min=0, quant_max=255
)

#: Outputs known to lie in [0, 1] (sigmoid, softmax).
default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=torch.quint8, quant_min=0, quant_max=255
)
