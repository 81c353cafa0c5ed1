"""Fake-quantize modules for quantization-aware training (QAT).

Names and constructor arguments match ``torchao.quantization.pt2e.fake_quantize`` (and
``torch.ao.quantization.fake_quantize``); forward outputs, gradients and qparams are
bit-identical to torch.ao's for the same arguments and inputs. ``is_observer_or_fake_quant`` and
the enable / disable switches also act on torch.ao's and torchao's modules.

The default constructors below are the configurations torch.ao ships under these names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pt2e_quant.fake_quantize.base import (
    FakeQuantize,
    FakeQuantizeBase,
    FixedQParamsFakeQuantize,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
    is_observer_or_fake_quant,
)
from pt2e_quant.fake_quantize.fused import FusedMovingAvgObsFakeQuantize
from pt2e_quant.fake_quantize.granular import PerTokenFakeQuantize, WeightFakeQuantize
from pt2e_quant.fake_quantize.learnable import (
    LearnableFakeQuantize,
    disable_range_learning,
    enable_range_learning,
)
from pt2e_quant.observer import (
    ObserverBase,
    default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
)
from pt2e_quant.observer.histogram import HistogramObserver
from pt2e_quant.observer.minmax import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)

__all__ = [
    "ObserverOrFakeQuantize",
    "ObserverOrFakeQuantizeConstructor",
    "FakeQuantizeBase",
    "FakeQuantize",
    "FusedMovingAvgObsFakeQuantize",
    "FixedQParamsFakeQuantize",
    "LearnableFakeQuantize",
    "PerTokenFakeQuantize",
    "WeightFakeQuantize",
    "is_observer_or_fake_quant",
    "enable_observer",
    "disable_observer",
    "enable_fake_quant",
    "disable_fake_quant",
    "enable_range_learning",
    "disable_range_learning",
    "default_fake_quant",
    "default_weight_fake_quant",
    "default_per_channel_weight_fake_quant",
    "default_histogram_fake_quant",
    "default_dynamic_fake_quant",
    "default_fused_act_fake_quant",
    "default_fused_wt_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
    "default_fixed_qparams_range_neg1to1_fake_quant",
    "default_fixed_qparams_range_0to1_fake_quant",
]

#: what a spec's ``observer_or_fake_quant_ctr`` builds (torchao's type names, for annotations)
ObserverOrFakeQuantize = ObserverBase | FakeQuantizeBase
ObserverOrFakeQuantizeConstructor = Callable[[], ObserverOrFakeQuantize]

#: Activations: moving-average min/max, uint8 with torch.ao's reduced 0..127 range.
default_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=0,
    quant_max=255,
    dtype=torch.quint8,
    qscheme=torch.per_tensor_affine,
    reduce_range=True,
)

#: Weights: symmetric int8, one range per tensor.
default_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype=torch.qint8,
    qscheme=torch.per_tensor_symmetric,
    reduce_range=False,
)

#: Weights: symmetric int8, one range per output channel.
default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype=torch.qint8,
    qscheme=torch.per_channel_symmetric,
    reduce_range=False,
    ch_axis=0,
)

#: Activations with a histogram observer (uint8, reduced range).
default_histogram_fake_quant = FakeQuantize.with_args(
    observer=HistogramObserver,
    quant_min=0,
    quant_max=255,
    dtype=torch.quint8,
    qscheme=torch.per_tensor_affine,
    reduce_range=True,
)

#: Dynamic activations: the observer keeps only the latest batch (averaging_constant=1).
default_dynamic_fake_quant = FakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=0,
    quant_max=255,
    is_dynamic=True,
    dtype=torch.quint8,
    averaging_constant=1,
)

#: Fused (single-kernel) version of :data:`default_fake_quant`, without the reduced range.
default_fused_act_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8
)

#: Fused version of :data:`default_weight_fake_quant`.
default_fused_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype=torch.qint8,
    qscheme=torch.per_tensor_symmetric,
)

#: Fused version of :data:`default_per_channel_weight_fake_quant`.
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAveragePerChannelMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype=torch.qint8,
    qscheme=torch.per_channel_symmetric,
)

#: Fixed qparams for outputs in [-1, 1].
default_fixed_qparams_range_neg1to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_neg1to1_observer
)

#: Fixed qparams for outputs in [0, 1].
default_fixed_qparams_range_0to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_0to1_observer
)
