"""``"arm"``: ExecuTorch's ``TOSAQuantizer`` for the TOSA-1.0+INT profile (entry point
``pt2e_quant.backends: arm``), the integer profile Ethos-U and the Arm VGF flow consume.

The preset is Arm's ``get_symmetric_quantization_config``: int8 activations, int8 symmetric
weights per channel (per tensor with ``per_tensor``), its QAT and dynamic forms with ``qat`` /
``dynamic``. Arm's flow takes the exported program's module without the export guard
(``check_guards=False``). ``--pte`` lowers with ``TOSAPartitioner`` to a TOSA flatbuffer inside
the ``.pte``; both need tosa-tools.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.lowering import pte_writer
from quantizers.vendors.requirements import EXECUTORCH, TOSA_TOOLS, import_vendor

__all__ = ["BACKEND", "TOSA_SPEC", "partitioner", "preset"]

NAME = "arm"
TOSA_SPEC = "TOSA-1.0+INT"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    module = import_vendor(
        NAME, "executorch.backends.arm.quantizer.arm_quantizer", EXECUTORCH, TOSA_TOOLS
    )
    specification = import_vendor(NAME, "executorch.backends.arm.tosa.specification")
    spec = specification.TosaSpecification.create_from_string(TOSA_SPEC)
    config = module.get_symmetric_quantization_config(
        is_per_channel=not per_tensor, is_qat=qat, is_dynamic=dynamic
    )
    return module.TOSAQuantizer(spec).set_global(config)


def partitioner() -> Any:
    partition = import_vendor(
        NAME, "executorch.backends.arm.tosa.partitioner", EXECUTORCH, TOSA_TOOLS
    )
    compile_spec = import_vendor(NAME, "executorch.backends.arm.tosa.compile_spec")
    return partition.TOSAPartitioner(compile_spec.TosaCompileSpec(TOSA_SPEC))


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Arm TOSA",
    description="ExecuTorch's Arm TOSAQuantizer, TOSA-1.0+INT symmetric int8",
    write_pte=pte_writer(NAME, partitioner),
    check_guards=False,
    order=10,
)
