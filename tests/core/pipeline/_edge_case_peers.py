"""The peer pipelines the bit-for-bit edge-case tests compare against.

Peers are ExecuTorch's XNNPACKQuantizer and torchao's X86InductorQuantizer, both run by
torchao's prepare/convert. Matching them bit for bit on dynamic shapes and half-precision
models is what makes migrating to pt2e_quant an import change; the helpers live here because
two edge-case files (dynamic shapes, dtypes and layouts) use them.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch.fx import GraphModule

#: The peers: ExecuTorch's XNNPACKQuantizer, torchao's X86InductorQuantizer (both run by
#: torchao's prepare/convert).
PEER_BACKENDS = [
    pytest.param("xnnpack", marks=[pytest.mark.torchao, pytest.mark.executorch]),
    pytest.param("x86", marks=pytest.mark.torchao),
]


def peer_pipeline(backend: str):
    """torchao's prepare/convert and the peer quantizer of ``backend`` (ExecuTorch's XNNPACK
    or torchao's X86), without keeping the Inductor pass torchao's x86 import installs."""
    pytest.importorskip("torchao")
    pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
    if backend == "xnnpack":
        pytest.importorskip("executorch")
        peer = importlib.import_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        config = peer.get_symmetric_quantization_config(is_per_channel=True)
        return pipeline, peer.XNNPACKQuantizer().set_global(config)
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    peer = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    inductor_config.pre_grad_custom_pass = before
    config = peer.get_default_x86_inductor_quantization_config()
    return pipeline, peer.X86InductorQuantizer().set_global(config)


def calibrated(prepared: GraphModule, calibration: list[tuple]) -> GraphModule:
    """Run every batch of ``calibration`` through a (peer-)prepared model and return it."""
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return prepared
