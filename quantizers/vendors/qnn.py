"""``"qnn"``: ExecuTorch's ``QnnQuantizer`` for Qualcomm's HTP (entry point
``pt2e_quant.backends: qnn``).

The preset is the quantizer's 8a8w default (uint8 activations, int8 symmetric weights) with
per-channel weights for conv and linear, as ExecuTorch's Qualcomm examples set it up. QAT is
the same config in training form; QNN has no dynamic quantization. Lowering needs Qualcomm's
QNN SDK (its AOT compiler), so ``write_pte`` refuses.

Building a ``QnnQuantizer`` tries to set up the QNN SDK (on Linux x86 without ``QNN_SDK_ROOT``
ExecuTorch downloads it); without an SDK it quantizes the same way but cannot check the op
constraints the SDK publishes.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import needs_sdk
from quantizers.vendors.requirements import EXECUTORCH, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "qnn"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(NAME, dynamic=(dynamic, "QnnQuantizer has static and QAT configs only"))
    module = import_vendor(NAME, "executorch.backends.qualcomm.quantizer.quantizer", EXECUTORCH)
    quantizer = module.QnnQuantizer()
    quantizer.set_default_quant_config(
        module.QuantDtype.use_8a8w,
        is_qat=qat,
        is_conv_per_channel=not per_tensor,
        is_linear_per_channel=not per_tensor,
    )
    return quantizer


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="QNN",
    description="ExecuTorch's Qualcomm QnnQuantizer, 8a8w",
    write_pte=needs_sdk(NAME, "Qualcomm's QNN SDK (QNN_SDK_ROOT)"),
    order=10,
)
