"""``"executorch_xnnpack"``: ExecuTorch's own ``XNNPACKQuantizer`` (entry point
``pt2e_quant.backends: executorch_xnnpack``), beside our re-implementation ``"xnnpack"``.

Same preset as ``"xnnpack"`` (int8 activations, int8 symmetric weights per channel unless
``per_tensor``, dynamic and QAT forms), built from ExecuTorch's class: for checking the two
against each other, or for a model that needs a behaviour only ExecuTorch's quantizer has.
Coverage predictions and ``--pte`` are XNNPACK's.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.requirements import EXECUTORCH, import_vendor
from quantizers.xnnpack.backend import BACKEND as XNNPACK

__all__ = ["BACKEND", "preset"]

NAME = "executorch_xnnpack"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    module = import_vendor(
        NAME, "executorch.backends.xnnpack.quantizer.xnnpack_quantizer", EXECUTORCH
    )
    config = module.get_symmetric_quantization_config(
        is_per_channel=not per_tensor, is_dynamic=dynamic, is_qat=qat
    )
    return module.XNNPACKQuantizer().set_global(config)


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="XNNPACK",
    description="ExecuTorch's own XNNPACKQuantizer",
    predict=XNNPACK.predict,
    summarize=XNNPACK.summarize,
    write_pte=XNNPACK.write_pte,
    order=10,
)
