"""What Inductor's x86 int8 kernels accept, as the check ``X86InductorQuantizer.validate`` runs.

A config the kernels cannot run would either not fuse (the q/dq ops and a float op run every
step, slower than no quantization) or compute wrong values, so each anchor a config was applied
to is checked here and the first problem is reported with the fix:

* oneDNN qconv / qlinear: uint8 activations per tensor, int8 weights per output channel
  (symmetric, ``ch_axis=0``), a float bias;
* ``onednn.linear_dynamic_fp16``: float16 weights, linear only;
* the LLM schemes (:mod:`quantizers.x86_inductor.llm_config`): int8 weight-only
  (``_weight_int8pack_mm``) and symmetric per-token int8 activations (``_int_mm`` -> qlinear),
  on linear / addmm only, with the same int8 per-channel weights;
* no per-group weights anywhere: Inductor has no lowering of the group q/dq ops on x86.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.graph.patterns import is_call
from pt2e_quant.observer.granular import PerGroupMinMaxObserver
from pt2e_quant.ops.families import ADDMM_OPS, LINEAR_OPS
from pt2e_quant.pipeline.observer_factory import observer_class_of
from quantizers.config import QuantizationConfig
from quantizers.x86_inductor.config import config_name, is_fp16_weight_only
from quantizers.x86_inductor.llm_config import is_linear_only

__all__ = ["config_problem"]

_UINT8 = (torch.uint8, torch.quint8)
_INT8 = (torch.int8, torch.qint8)
_FIX = " Start from get_default_x86_inductor_quantization_config() and change only the observers."
_LLM_FIX = (
    " Use get_x86_inductor_weight_only_int8_config() or get_x86_inductor_dynamic_int8_config()."
)


def _spec_text(spec: Any) -> str:
    fields = [f"dtype={getattr(spec, 'dtype', None)}", f"qscheme={getattr(spec, 'qscheme', None)}"]
    if getattr(spec, "ch_axis", None) is not None:
        fields.append(f"ch_axis={spec.ch_axis}")
    return f"{type(spec).__name__}({', '.join(fields)})"


def _groups_input_columns(spec: Any) -> bool:
    cls = observer_class_of(getattr(spec, "observer_or_fake_quant_ctr", None))
    return isinstance(cls, type) and issubclass(cls, PerGroupMinMaxObserver)


def config_problem(node: Node, config: QuantizationConfig, has_weight: bool) -> str | None:
    """What in ``config`` the x86 kernels cannot run at ``node``, and the fix (None if nothing).

    ``has_weight``: ``node`` is the anchor of a weighted pattern (conv, linear, addmm), not an
    op quantized on its activations only (mul, matmul, pooling).
    """
    if is_fp16_weight_only(config):
        if not has_weight or is_call(node, LINEAR_OPS):
            return None
        return (
            "its weights are float16, and Inductor has a float16-weight kernel for linear only "
            "(onednn.linear_dynamic_fp16); here the weight would be cast to float16 and back on "
            "every call. Scope get_x86_inductor_linear_dynamic_fp16_config() to linears: "
            "set_module_type_qconfig(nn.Linear, ...) or set_function_type_qconfig(F.linear, ...)."
        )
    if has_weight and _groups_input_columns(config.weight):
        return (
            "its weight is quantized per group of input columns (PerGroupMinMaxObserver), and "
            "Inductor has no x86 kernel for per-group weights: it has no lowering of "
            "dequantize_per_channel_group, which would run as a Python call on every step. "
            "Quantize the weight per output channel." + _LLM_FIX
        )
    if is_linear_only(config):
        return _llm_problem(node, config, has_weight)
    for role in ("input_activation", "output_activation"):
        spec = getattr(config, role)
        if spec is None:
            continue
        if spec.dtype not in _UINT8 or spec.qscheme not in (None, torch.per_tensor_affine):
            return (
                f"its {role} spec is {_spec_text(spec)}, but x86 int8 kernels take uint8 "
                "activations quantized per tensor (dtype=torch.uint8, "
                "qscheme=torch.per_tensor_affine)." + _FIX
            )
    return _weight_problem(config, "conv/linear", _FIX) if has_weight else None


def _llm_problem(node: Node, config: QuantizationConfig, has_weight: bool) -> str | None:
    """The LLM schemes: a kernel for linear / addmm only; symmetric per-token activations."""
    if not (has_weight and is_call(node, LINEAR_OPS | ADDMM_OPS)):
        return (
            f"{config_name(config)} is an LLM scheme, which Inductor runs as an int8 kernel "
            "(_weight_int8pack_mm, or _int_mm -> onednn qlinear) for linear layers only; here "
            "the weight would be dequantized on every call. Scope it to linears: "
            "set_module_type_qconfig(nn.Linear, ...) or set_function_type_qconfig(F.linear, "
            "...), and quantize convs with get_default_x86_inductor_quantization_config()."
        )
    activation = config.input_activation
    if activation is not None and (
        activation.dtype not in _INT8
        or activation.qscheme != torch.per_tensor_symmetric
        or not activation.is_dynamic
    ):
        return (
            f"its per-token activation spec is {_spec_text(activation)}, but Inductor's int8 "
            "per-token kernel pattern (_int_mm -> onednn qlinear) has no zero point: tokens "
            "must be quantized symmetrically, at run time (dtype=torch.int8, qscheme="
            "torch.per_tensor_symmetric, is_dynamic=True)." + _LLM_FIX
        )
    if config.output_activation is not None:
        return (
            f"its output_activation spec is {_spec_text(config.output_activation)}, but the "
            "LLM kernels write float outputs; set it to None." + _LLM_FIX
        )
    return _weight_problem(config, "linear", _LLM_FIX)


def _weight_problem(config: QuantizationConfig, kernels: str, fix: str) -> str | None:
    weight = config.weight
    if weight is not None and (
        weight.dtype not in _INT8
        or weight.qscheme != torch.per_channel_symmetric
        or weight.ch_axis != 0
    ):
        return (
            f"its weight spec is {_spec_text(weight)}, but x86 int8 {kernels} kernels take "
            "int8 weights quantized per output channel, symmetric (dtype=torch.int8, "
            "qscheme=torch.per_channel_symmetric, ch_axis=0)." + fix
        )
    bias = config.bias
    if bias is not None and not getattr(bias, "dtype", torch.float32).is_floating_point:
        return (
            f"its bias spec is {_spec_text(bias)}, but x86 int8 {kernels} kernels add a float "
            "bias; set the config's bias to None." + fix
        )
    return None
