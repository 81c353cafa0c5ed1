"""``"coreml"``: ExecuTorch's ``CoreMLQuantizer`` (entry point ``pt2e_quant.backends: coreml``).

The preset is the config of ExecuTorch's Core ML guide, a coremltools ``LinearQuantizerConfig``:
symmetric, uint8 activations, int8 weights per channel (per tensor with ``per_tensor``). The
quantizer simulates with fake-quant modules in PTQ and QAT alike; it has no dynamic mode.
``--pte`` lowers with ``CoreMLPartitioner`` (coremltools converts on Linux; running the model
needs an Apple device).
"""

from __future__ import annotations

from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.vendors.knobs import refuse
from quantizers.vendors.lowering import pte_writer
from quantizers.vendors.requirements import COREMLTOOLS, EXECUTORCH, import_vendor

__all__ = ["BACKEND", "partitioner", "preset"]

NAME = "coreml"


def preset(*, per_tensor: bool = False, dynamic: bool = False, qat: bool = False) -> Any:
    refuse(NAME, dynamic=(dynamic, "CoreMLQuantizer has no dynamic quantization"))
    import torch

    module = import_vendor(
        NAME, "executorch.backends.apple.coreml.quantizer", EXECUTORCH, COREMLTOOLS
    )
    configs = import_vendor(
        NAME, "coremltools.optimize.torch.quantization.quantization_config", COREMLTOOLS
    )
    global_config = {
        "quantization_scheme": configs.QuantizationScheme.symmetric,
        "activation_dtype": torch.quint8,
        "weight_dtype": torch.qint8,
        "weight_per_channel": not per_tensor,
    }
    config = configs.LinearQuantizerConfig.from_dict({"global_config": global_config})
    return module.CoreMLQuantizer(config)


def partitioner() -> Any:
    module = import_vendor(
        NAME, "executorch.backends.apple.coreml.partition", EXECUTORCH, COREMLTOOLS
    )
    return module.CoreMLPartitioner()


BACKEND = Backend(
    name=NAME,
    preset=preset,
    title="Core ML",
    description="ExecuTorch's CoreMLQuantizer, a8w8 per-channel",
    write_pte=pte_writer(NAME, partitioner),
    order=10,
)
