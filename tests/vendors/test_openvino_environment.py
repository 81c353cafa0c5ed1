"""Environment check for OpenVINO: ExecuTorch's OpenVINOQuantizer (built on ``nncf``) under
torchao's prepare/convert, and OpenVINO's CPU runtime running the converted module.

What works here, for the later differential tests:

* ``executorch.backends.openvino.quantizer.OpenVINOQuantizer(mode=QuantizationMode.X, **kw)``
  (nncf 3.x no longer ships the quantizer itself). ``INT8_SYM`` annotates q/dq pairs;
  the weight-only modes ``INT8WO_SYM`` / ``INT4WO_SYM`` insert nncf decompressor modules
  (``INT8SymmetricWeightsDecompressor``, ``INT4SymmetricWeightsDecompressor``) instead.
  INT4 compresses linear layers only, keeps the first and last layer in int8 unless
  ``all_layers=True``, and needs the input channels divisible by ``group_size`` (default 128).
* the runtime path is ExecuTorch's OpenVINO delegate, built ahead of time:
  ``to_edge_transform_and_lower(program, partitioner=[OpenvinoPartitioner([CompileSpec(
  "device", b"CPU")])], compile_config=EdgeCompileConfig(_check_ir_validity=False))`` under
  ``torch.no_grad()``, then ``openvino.Core().import_model(BytesIO(processed_bytes), "CPU",
  config)``. Pitfalls: ``convert_pt2e(fold_quantize=False)`` is required for INT8_SYM (folded
  int8 weights make OpenVINO's frontend build integer convolutions and fail); INT4 packs its
  weights with ``bitwise_right_shift``, which the core-ATen check rejects and only the
  delegate path converts; a weight-only model converted with gradients enabled holds
  non-leaf weight tensors that lowering cannot deep-copy, so quantize under ``no_grad``;
  ``torch.compile(backend="openvino")`` fails on torch 2.13 guards.
* ``INFERENCE_PRECISION_HINT=f32`` and ``DYNAMIC_QUANTIZATION_GROUP_SIZE=0`` keep the CPU
  plugin from running float layers in bf16 (on AMX / AVX512-BF16 machines) and from
  quantizing activations of weight-compressed layers on the fly, so any difference from
  torchao is the quantizer's, not the plugin's. INT8_SYM still runs real u8 kernels
  (~49 dB against torchao on tiny_resnet); the weight-only modes agree to ~80 dB.
"""

from __future__ import annotations

import io
from collections import Counter

import pytest
import torch

from pt2e_quant.debug import compute_sqnr
from tests.models import TinyResNet
from tests.vendors._overlay import require_vendor
from tests.vendors._torchao_baseline import torchao_ptq

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]

# preset -> OpenVINOQuantizer keyword arguments (tiny_resnet's classifier has 16 inputs)
PRESETS = {
    "INT8_SYM": {},
    "INT8WO_SYM": {},
    "INT4WO_SYM": {"group_size": 16, "all_layers": True},
}
PLUGIN_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
MIN_SQNR_DB = 40.0


def openvino_ptq(preset: str):
    quantizer = require_vendor("executorch.backends.openvino.quantizer")
    mode = quantizer.QuantizationMode[preset]
    with torch.no_grad():
        return torchao_ptq(
            TinyResNet(),
            quantizer.OpenVINOQuantizer(mode=mode, **PRESETS[preset]),
            fold_quantize=False,
        )


def module_types(converted) -> Counter:
    return Counter(
        type(converted.get_submodule(node.target)).__name__
        for node in converted.graph.nodes
        if node.op == "call_module"
    )


def test_int8_sym_quantizes_activations_and_per_channel_weights() -> None:
    converted, _, _ = openvino_ptq("INT8_SYM")
    ops = Counter(node.target for node in converted.graph.nodes if node.op == "call_function")
    decomposed = torch.ops.quantized_decomposed
    assert ops[decomposed.quantize_per_tensor.default] > 0
    assert ops[decomposed.quantize_per_channel.default] == 10  # every conv and the classifier
    assert not module_types(converted)


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("INT8WO_SYM", {"INT8SymmetricWeightsDecompressor": 10}),
        # convolutions fall back to int8 (nncf's backup mode): INT4 is for linear layers only
        (
            "INT4WO_SYM",
            {"INT4SymmetricWeightsDecompressor": 1, "INT8AsymmetricWeightsDecompressor": 9},
        ),
    ],
)
def test_weight_only_presets_insert_decompressors(preset: str, expected: dict) -> None:
    converted, _, _ = openvino_ptq(preset)
    targets = {str(node.target) for node in converted.graph.nodes if node.op == "call_function"}
    assert module_types(converted) == Counter(expected)
    assert not [t for t in targets if t.startswith("quantized_decomposed.")]


@pytest.mark.executorch
@pytest.mark.parametrize("preset", list(PRESETS))
def test_openvino_cpu_runtime_matches_torchao(preset: str) -> None:
    openvino = require_vendor("openvino")
    partitioner = require_vendor("executorch.backends.openvino.partitioner")
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    converted, _, inputs = openvino_ptq(preset)
    with torch.no_grad():
        edge = to_edge_transform_and_lower(
            torch.export.export(converted, inputs),
            partitioner=[partitioner.OpenvinoPartitioner([CompileSpec("device", b"CPU")])],
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
        )
    graph = edge.exported_program().graph_module
    (delegate,) = [getattr(graph, name) for name in dir(graph) if name.startswith("lowered_module")]
    assert delegate.backend_id == "OpenvinoBackend"

    compiled = openvino.Core().import_model(
        io.BytesIO(delegate.processed_bytes), "CPU", PLUGIN_CONFIG
    )
    actual = torch.from_numpy(compiled(inputs[0].numpy())[0])
    with torch.no_grad():
        expected = converted(*inputs)
    assert compute_sqnr(expected, actual).item() >= MIN_SQNR_DB
    if preset == "INT8_SYM":
        precisions = {
            node.get_rt_info()["runtimePrecision"].astype(str)
            for node in compiled.get_runtime_model().get_ops()
            if node.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")
        }
        assert precisions == {"u8"}, "OpenVINO should run the quantized layers in integers"
