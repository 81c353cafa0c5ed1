"""``"samsung"``: ExecuTorch's ``EnnQuantizer`` for Samsung Exynos NPUs (entry point
``pt2e_quant.backends: samsung``).

The preset is the quantizer's default: A8W8 with per-channel symmetric weights (per-tensor
asymmetric with ``per_tensor``), its QAT form with ``qat``; no dynamic mode. Lowering needs
Samsung's Exynos AI Studio (ENN) SDK, so ``write_pte`` refuses.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import needs_sdk
from quantizers.vendors.requirements import EXECUTORCH, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "samsung"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(NAME, dynamic=(dynamic, "EnnQuantizer is static only"))
    module = import_vendor(NAME, "executorch.backends.samsung.quantizer", EXECUTORCH)
    quantizer = module.EnnQuantizer()
    quantizer.setup_quant_params(module.Precision.A8W8, is_per_channel=not per_tensor, is_qat=qat)
    return quantizer


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Samsung ENN",
    description="ExecuTorch's Samsung EnnQuantizer, A8W8",
    write_pte=needs_sdk(NAME, "Samsung's Exynos AI Studio (ENN) SDK"),
    order=10,
)
