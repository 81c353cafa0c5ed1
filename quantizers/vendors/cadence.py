"""``"cadence"``: ExecuTorch's ``CadenceDefaultQuantizer`` for Cadence Xtensa DSPs (entry point
``pt2e_quant.backends: cadence``).

The preset is the default quantizer: int8 asymmetric activations, int8 symmetric per-tensor
weights (so ``per_tensor`` changes nothing), its QAT form with ``qat``; no dynamic mode. Its
annotators find patterns through the ``source_fn_stack`` metadata strict export writes, as
Cadence's compiler exports, so ``quantize()`` exports strictly for it (``export_strict``).
Cadence lowers by its own AOT compiler rather than a partitioner: ``--pte`` is not offered.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.requirements import EXECUTORCH, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "cadence"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(NAME, dynamic=(dynamic, "CadenceDefaultQuantizer is static only"))
    module = import_vendor(NAME, "executorch.backends.cadence.aot.quantizer.quantizer", EXECUTORCH)
    return module.CadenceDefaultQuantizer(is_qat=qat)


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Cadence",
    description="ExecuTorch's CadenceDefaultQuantizer, int8 per-tensor",
    export_strict=True,
    order=10,
)
