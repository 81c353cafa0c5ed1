"""The X86 Inductor presets for LLM linears: int8 weight-only, and int8 dynamic per token.

Chosen from what Inductor (torch 2.13) turns into an int8 kernel on x86 CPUs, read in
``torch/_inductor/fx_passes/quantization.py`` and checked by compiling
(``tests/quantizers/x86_inductor/test_x86_inductor_llm_lowering.py``):

* :func:`get_x86_inductor_weight_only_int8_config`: activations stay float, weights are int8,
  symmetric, one scale per output channel (torchao's ``Int8WeightOnlyConfig``). The kernel is
  ``aten._weight_int8pack_mm(x, w_int8, scales)``, which reads the int8 weight directly (a
  quarter of the float weight's memory traffic, what decoding is bound by). Inductor's own
  patterns only create it from ``mm(x, w_int8.to(bf16)) * scales`` with bfloat16 activations;
  the kernel itself and Inductor's lowering of it take float32 too, so
  :func:`~quantizers.x86_inductor.inductor_rewrites.rewrite_for_inductor` emits it directly,
  for float32 and bfloat16 models alike.
* :func:`get_x86_inductor_dynamic_int8_config`: int8 activations quantized per token at run
  time, *symmetric* (scale ``amax / 127``, zero point 0), int8 symmetric per-channel weights
  (torchao's ``Int8DynamicActivationInt8WeightConfig``, "8da8w"). Inductor's freezing pattern
  ``_int_mm(x_int8, w_int8) -> to(float) * x_scale * w_scale`` becomes
  ``onednn.qlinear_pointwise`` on a prepacked weight; that pattern has no zero point, so the
  tokens are symmetric (XNNPACK's asymmetric per-token chain has no Inductor kernel).

Neither is what convert emits (``dequantize_per_channel(w) -> linear`` and a
``quantized_decomposed`` per-token chain, for which Inductor has no lowering at all), so
``rewrite_for_inductor(converted)`` must run before ``torch.compile``; the kernels also need
``torch._inductor.config.freezing = True`` and ``torch.no_grad()`` for the dynamic one.

Not offered, and why: int4 / per-group weights (Inductor creates
``_weight_int4pack_mm_for_cpu`` from no pattern and has no lowering of the group q/dq ops,
so they would run as opaque Python calls every step), and asymmetric per-token activations
(no pattern). Both presets quantize linear and ``addmm`` (GPT-2's ``Conv1D``) only:
:class:`~quantizers.x86_inductor.quantizer.X86InductorQuantizer` leaves mul, matmul and
pooling float under them and refuses them on a conv (:mod:`.kernel_constraints`).
"""

from __future__ import annotations

import functools

import torch

from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.observer import PerTokenDynamicObserver
from pt2e_quant.pipeline.observer_factory import observer_class_of
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor.config import get_default_x86_inductor_quantization_config

__all__ = [
    "get_x86_inductor_dynamic_int8_config",
    "get_x86_inductor_weight_only_int8_config",
    "is_linear_only",
    "is_per_token",
]


@functools.lru_cache
def get_x86_inductor_weight_only_int8_config() -> QuantizationConfig:
    """Float activations, int8 weights per output channel (symmetric, -128..127, min/max
    observer), folded to int8 constants at convert; for ``_weight_int8pack_mm``."""
    weight = get_default_x86_inductor_quantization_config().weight
    return QuantizationConfig(None, None, weight, None)


@functools.lru_cache
def get_x86_inductor_dynamic_int8_config() -> QuantizationConfig:
    """int8 activations, symmetric per token at run time; int8 per-channel weights as in
    :func:`get_x86_inductor_weight_only_int8_config`; for ``_int_mm`` -> oneDNN qlinear."""
    activation = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,  # each token's own symmetric range
        is_dynamic=True,
        observer_or_fake_quant_ctr=PerTokenDynamicObserver,
    )
    weight = get_x86_inductor_weight_only_int8_config().weight
    return QuantizationConfig(activation, None, weight, None)


def is_per_token(spec: object) -> bool:
    """Whether an activation spec quantizes per token (a :class:`PerTokenDynamicObserver`)."""
    cls = observer_class_of(getattr(spec, "observer_or_fake_quant_ctr", None))
    return isinstance(cls, type) and issubclass(cls, PerTokenDynamicObserver)


def is_linear_only(config: QuantizationConfig) -> bool:
    """Whether ``config`` is one of the LLM schemes above (int8 weight-only, or per-token
    activations), which Inductor has kernels for on linear layers only."""
    activation, weight = config.input_activation, config.weight
    if activation is None:
        return weight is not None and weight.dtype in (torch.int8, torch.qint8)
    return is_per_token(activation)
