"""What a backend quantizer applies to a matched pattern: one spec per role.

The field names and order match torchao's / ExecuTorch's ``QuantizationConfig``, so configs
built for the peers read the same here. ``None`` for a role leaves it float (a weight-only
config has no activation specs; a dynamic config has no output spec).

The ``get_*_qspec`` readers are the ones torchao's quantizer tutorial builds custom annotators
on: each returns its role's spec (``None`` for no config or a float role) after checking it is
of a kind the standard annotators handle, so a migrated quantizer rejects the same configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.errors import SpecError

__all__ = [
    "QuantizationConfig",
    "checked_config",
    "get_input_act_qspec",
    "get_output_act_qspec",
    "get_weight_qspec",
    "get_bias_qspec",
]


@dataclass(frozen=True, eq=True)
class QuantizationConfig:
    input_activation: QuantizationSpec | None
    output_activation: QuantizationSpec | None
    weight: QuantizationSpec | None
    bias: QuantizationSpec | None
    is_qat: bool = False

    @property
    def is_dynamic(self) -> bool:
        """Activations are quantized at run time (only weighted ops are quantized then)."""
        return self.input_activation is not None and self.input_activation.is_dynamic


def checked_config(config: object, setter: str, factory: str) -> QuantizationConfig | None:
    """``config`` if it is one of our configs or ``None``; otherwise a TypeError saying which.

    Every setter calls this, so a wrong object fails where it was passed rather than as an
    attribute error deep in ``annotate``. The likeliest wrong object is a half-done migration:
    a config built by torchao's or ExecuTorch's helpers has the same class name but carries
    those libraries' spec classes, so the message names the class's module and the import
    to change.
    """
    if config is None or isinstance(config, QuantizationConfig):
        return config
    kind = type(config)
    got = f"{kind.__module__}.{kind.__qualname__}"
    hint = f"build it with quantizers.{factory}() or quantizers.config.QuantizationConfig"
    if kind.__name__ == "QuantizationConfig":
        hint = (
            f"this config comes from another library; {hint} (migrating is an import change: "
            f"`from quantizers import {factory}`)"
        )
    raise TypeError(
        f"{setter}: expected a quantizers.config.QuantizationConfig or None, got {got}; {hint}"
    )


_ACTIVATION_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_WEIGHT_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric, None)


def _role_spec(config: QuantizationConfig | None, role: str) -> QuantizationSpec | None:
    return None if config is None else getattr(config, role)


def _checked_qscheme(
    spec: QuantizationSpec | None, role: str, allowed: tuple
) -> QuantizationSpec | None:
    if spec is not None and spec.qscheme not in allowed:
        names = ", ".join(str(q) for q in allowed if q is not None)
        raise SpecError(
            f"QuantizationConfig.{role} uses qscheme {spec.qscheme}; the standard annotators "
            f"take {names} here. Change that spec's qscheme, or read the field directly in "
            "a custom annotator."
        )
    return spec


def get_input_act_qspec(config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The input-activation spec: per-tensor (affine or symmetric) or ``None``."""
    spec = _role_spec(config, "input_activation")
    return _checked_qscheme(spec, "input_activation", _ACTIVATION_QSCHEMES)


def get_output_act_qspec(config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The output-activation spec: per-tensor (affine or symmetric) or ``None``."""
    spec = _role_spec(config, "output_activation")
    return _checked_qscheme(spec, "output_activation", _ACTIVATION_QSCHEMES)


def get_weight_qspec(config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The weight spec: symmetric, per tensor or per channel, or ``None``."""
    return _checked_qscheme(_role_spec(config, "weight"), "weight", _WEIGHT_QSCHEMES)


def get_bias_qspec(config: QuantizationConfig | None) -> QuantizationSpec | None:
    """The bias spec, which must keep the bias float (kernels quantize it themselves)."""
    spec = _role_spec(config, "bias")
    if spec is not None and spec.dtype != torch.float:
        raise SpecError(
            f"QuantizationConfig.bias has dtype {spec.dtype}; only a float bias spec is "
            "supported (the kernels derive the int32 bias from the input and weight scales). "
            "Use a DerivedQuantizationSpec in a custom annotator for an int32 bias."
        )
    return spec
