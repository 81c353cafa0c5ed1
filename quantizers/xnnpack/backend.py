"""The ``"xnnpack"`` backend as the core's registry sees it (entry point
``pt2e_quant.backends: xnnpack``): the recommended preset, the partitioner prediction and the
ExecuTorch lowering behind the CLI's ``--pte``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pt2e_quant.contract.backends import Backend
from quantizers.xnnpack.delegation import FP32, INT8, INT8_DYNAMIC, predict_xnnpack
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.xnnpack.weight_only import needs_non_static_float_weights

__all__ = ["BACKEND", "INSTALL_EXECUTORCH", "preset"]

INSTALL_EXECUTORCH = "install executorch (pip install executorch==1.5.1) to write .pte"


def preset(
    *, per_tensor: bool = False, dynamic: bool = False, qat: bool = False
) -> XNNPACKQuantizer:
    """int8 per-tensor activations, int8 symmetric weights, per channel unless ``per_tensor``
    (ExecuTorch's recommended static preset)."""
    config = get_symmetric_quantization_config(
        is_per_channel=not per_tensor, is_dynamic=dynamic, is_qat=qat
    )
    return XNNPACKQuantizer().set_global(config)


def _summarize(counts: Mapping[str, int]) -> str:
    """``"; XNNPACK will delegate 3 as int8 (2 dynamically quantized), 1 in fp32"``."""
    dynamic = counts.get(INT8_DYNAMIC, 0)
    int8 = f"{counts.get(INT8, 0) + dynamic} as int8"
    if dynamic:
        int8 += f" ({dynamic} dynamically quantized)"
    return f"; XNNPACK will delegate {int8}, {counts.get(FP32, 0)} in fp32"


def _write_pte(program: Any, path: Path) -> None:
    """Lower with ExecuTorch's XNNPACK partitioner and write the flatbuffer.

    Weight-only linears keep their dequantize outside the delegate
    (:func:`~quantizers.xnnpack.weight_only.needs_non_static_float_weights`)."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
    except ImportError:
        raise RuntimeError(INSTALL_EXECUTORCH) from None
    partitioner = XnnpackPartitioner(
        force_non_static_weights_for_f32_linear=needs_non_static_float_weights(program)
    )
    edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
    Path(path).write_bytes(edge.to_executorch().buffer)


BACKEND = Backend(
    name="xnnpack",
    preset=preset,
    quantizer_types=(XNNPACKQuantizer,),
    title="XNNPACK",
    description="ExecuTorch's XNNPACK delegate",
    predict=lambda node, status: predict_xnnpack(node),
    summarize=_summarize,
    order=0,
    write_pte=_write_pte,
)
