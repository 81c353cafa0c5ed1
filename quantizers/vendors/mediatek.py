"""``"mediatek"``: ExecuTorch's ``NeuropilotQuantizer`` for MediaTek NPUs (entry point
``pt2e_quant.backends: mediatek``).

ExecuTorch's MediaTek package imports MediaTek's NeuroPilot converter (``mtk_converter``) as
soon as it is imported, and that SDK is not on PyPI: without it the backend is listed but
``preset`` raises :class:`~pt2e_quant.errors.MissingPackageError` naming it. With it, the preset
is A8W8 with per-channel weights, the quantizer's fixed default (no per-tensor, dynamic
or QAT knob).
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import needs_sdk
from quantizers.vendors.requirements import EXECUTORCH, MEDIATEK_SDK, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "mediatek"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(
        NAME,
        per_tensor=(per_tensor, "NeuropilotQuantizer's weights are per-channel, with no setter"),
        dynamic=(dynamic, "NeuropilotQuantizer is static only"),
        qat=(qat, "NeuropilotQuantizer has no QAT config"),
    )
    module = import_vendor(NAME, "executorch.backends.mediatek.quantizer", EXECUTORCH, MEDIATEK_SDK)
    quantizer = module.NeuropilotQuantizer()
    quantizer.setup_precision(module.Precision.A8W8)
    return quantizer


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="MediaTek",
    description="ExecuTorch's MediaTek NeuropilotQuantizer (needs the NeuroPilot SDK)",
    write_pte=needs_sdk(NAME, "MediaTek's NeuroPilot Express SDK"),
    supports_per_tensor=False,
    order=10,
)
