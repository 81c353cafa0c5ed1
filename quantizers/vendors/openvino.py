"""``"openvino"``: the ``OpenVINOQuantizer`` ExecuTorch ships, built on NNCF (entry point
``pt2e_quant.backends: openvino``).

The preset is ``QuantizationMode.INT8_SYM``: int8 symmetric activations and weights, weights
per channel as NNCF decides (``per_tensor`` is not a choice it offers). No dynamic or QAT mode
through PT2E. Needs nncf and openvino (ExecuTorch's OpenVINO package imports both).
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.requirements import EXECUTORCH, NNCF, OPENVINO, import_vendor

__all__ = ["BACKEND", "preset"]

NAME = "openvino"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(
        NAME,
        per_tensor=(per_tensor, "OpenVINOQuantizer's INT8_SYM mode picks the weight granularity"),
        dynamic=(dynamic, "OpenVINOQuantizer is static only"),
        qat=(qat, "OpenVINOQuantizer has no PT2E QAT mode"),
    )
    module = import_vendor(
        NAME, "executorch.backends.openvino.quantizer", EXECUTORCH, NNCF, OPENVINO
    )
    return module.OpenVINOQuantizer(mode=module.QuantizationMode.INT8_SYM)


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="OpenVINO",
    description="ExecuTorch's NNCF OpenVINOQuantizer, INT8_SYM",
    supports_per_tensor=False,
    order=10,
)
