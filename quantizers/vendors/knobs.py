"""Preset knobs a vendor's quantizer cannot honour, refused by name.

``preset(per_tensor=..., dynamic=..., qat=...)`` is the same call for every backend; a vendor
whose quantizer has no such mode raises ``ValueError`` naming the knob and why, rather than
quietly building something else.
"""

from __future__ import annotations

__all__ = ["refuse"]


def refuse(backend: str, **knobs: tuple[bool, str]) -> None:
    """``refuse("vulkan", qat=(qat, "VulkanQuantizer has no QAT config"))``: raise for the
    first knob that is set, with its reason."""
    for knob, (value, why) in knobs.items():
        if value:
            raise ValueError(
                f"{knob}: the {backend} backend does not support it ({why}); drop {knob}"
            )
