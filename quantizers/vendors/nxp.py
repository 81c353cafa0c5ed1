"""``"nxp"``: ExecuTorch's ``NeutronQuantizer`` for NXP's eIQ Neutron NPU, targeting the
i.MX RT700 (entry point ``pt2e_quant.backends: nxp``).

ExecuTorch's NXP quantizer loads NXP's eIQ Neutron SDK (``eiq_neutron_sdk``) when imported, and
that SDK is not on PyPI: without it the backend is listed but ``preset`` raises
:class:`~pt2e_quant.errors.MissingPackageError` naming it. With it, the preset is the
quantizer's int8 default (per-tensor symmetric weights, so ``per_tensor`` changes nothing),
its QAT form with ``qat``; no dynamic mode.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import needs_sdk
from quantizers.vendors.requirements import EXECUTORCH, NEUTRON_SDK, import_vendor

__all__ = ["BACKEND", "TARGET", "preset"]

NAME = "nxp"
TARGET = "imxrt700"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(
        NAME,
        dynamic=(dynamic, "NeutronQuantizer is static only"),
    )
    module = import_vendor(
        NAME, "executorch.backends.nxp.quantizer.neutron_quantizer", EXECUTORCH, NEUTRON_SDK
    )
    target = import_vendor(NAME, "executorch.backends.nxp.backend.neutron_target_spec")
    return module.NeutronQuantizer(target.NeutronTargetSpec(TARGET), is_qat=qat)


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="NXP Neutron",
    description="ExecuTorch's NXP NeutronQuantizer (needs the eIQ Neutron SDK)",
    write_pte=needs_sdk(NAME, "NXP's eIQ Neutron SDK"),
    order=10,
)
