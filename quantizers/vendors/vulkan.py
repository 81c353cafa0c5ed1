"""``"vulkan"``: ExecuTorch's ``VulkanQuantizer`` (entry point ``pt2e_quant.backends: vulkan``).

The quantizer annotates linear layers only. Its default config, the preset, is int8 per-channel
weight-only; ``dynamic=True`` adds int8 activations quantized at run time (dynamic a8w8).
Weights are per-channel in both, and there is no QAT config. ``--pte`` lowers with
``VulkanPartitioner``, which runs without a GPU or the Vulkan SDK.
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import pte_writer
from quantizers.vendors.requirements import EXECUTORCH, import_vendor

__all__ = ["BACKEND", "partitioner", "preset"]

NAME = "vulkan"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(
        NAME,
        per_tensor=(per_tensor, "VulkanQuantizer's weights are per-channel only"),
        qat=(qat, "VulkanQuantizer has no QAT config"),
    )
    module = import_vendor(
        NAME, "executorch.backends.vulkan.quantizer.vulkan_quantizer", EXECUTORCH
    )
    config = module.get_symmetric_quantization_config(is_dynamic=dynamic)
    return module.VulkanQuantizer().set_global(config)


def partitioner() -> Any:
    module = import_vendor(
        NAME, "executorch.backends.vulkan.partitioner.vulkan_partitioner", EXECUTORCH
    )
    return module.VulkanPartitioner()


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Vulkan",
    description="ExecuTorch's VulkanQuantizer, int8 weight-only linear",
    write_pte=pte_writer(NAME, partitioner),
    supports_per_tensor=False,
    order=10,
)
