"""``"cortex_m"``: ExecuTorch's ``CortexMQuantizer`` for CMSIS-NN kernels on Cortex-M (entry
point ``pt2e_quant.backends: cortex_m``).

The preset is the quantizer's default: int8 everywhere, convolutions always per channel, the
other ops per tensor. It has no per-tensor-weight, dynamic or QAT mode. Its flow takes the
exported program's module without the export guard (``check_guards=False``). Cortex-M lowers by
ExecuTorch's own pass pipeline rather than a partitioner, which is not wired here, so ``--pte``
is not offered.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.requirements import EXECUTORCH, TOSA_TOOLS, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "cortex_m"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(
        NAME,
        per_tensor=(per_tensor, "CortexMQuantizer quantizes conv weights per channel only"),
        dynamic=(dynamic, "CortexMQuantizer is static only"),
        qat=(qat, "CortexMQuantizer has no QAT config"),
    )
    module = import_vendor(
        NAME, "executorch.backends.cortex_m.quantizer.quantizer", EXECUTORCH, TOSA_TOOLS
    )
    return module.CortexMQuantizer()


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Cortex-M",
    description="ExecuTorch's CortexMQuantizer, int8 CMSIS-NN",
    supports_per_tensor=False,
    check_guards=False,
    order=10,
)
