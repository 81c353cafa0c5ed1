"""What a backend quantizer applies to a matched pattern: one spec per role.

The field names and order match torchao's / ExecuTorch's ``QuantizationConfig``, so configs
built for the peers read the same here. ``None`` for a role leaves it float (a weight-only
config has no activation specs; a dynamic config has no output spec).
"""

from __future__ import annotations

from dataclasses import dataclass

from pt2e_quant.specs import QuantizationSpec

__all__ = ["QuantizationConfig"]


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
