"""ExecuTorch's vendor quantizers through torchao's pipeline and ours: bit-identical.

Each vendor quantizer is written against torchao's classes; run through pt2e_quant's
prepare / convert it must give the same q/dq ops and ``torch.equal`` outputs as through
torchao's (the harness is :mod:`tests.vendors.differential`). Every configuration runs on the
CNN and transformer zoo models; the configurations that quantize embedding tables also run on
:class:`~tests.models.EmbeddingConvLinearModule`, and QNN's per-block (LPBQ) weights on the
linears of the zoo models.

QAT configurations and CoreML are marked ``slow``: torchao's QAT and CoreML's annotator
export hundreds of search patterns (CoreML ~400 per ``annotate``); the pattern cache
(:mod:`tests.peer_pattern_cache`) makes every run after the first one cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch.fx import GraphModule

from tests.models import ZOO, EmbeddingConvLinearModule
from tests.peer_pattern_cache import cached_peer_pattern_exports
from tests.vendors.differential import CNN_AND_TRANSFORMER, compare, export_model

pytestmark = pytest.mark.vendor

_aten = torch.ops.aten
_COREML_PATTERNS = "executorch.backends.apple.coreml.quantizer._coreml_quantizer_utils"


# ---------------------------------------------------------------------------- configurations


def xnnpack(**config: Any) -> Callable[[], Any]:
    def make() -> Any:
        xnn = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        return xnn.XNNPACKQuantizer().set_global(xnn.get_symmetric_quantization_config(**config))

    return make


def vulkan(**config: Any) -> Callable[[], Any]:
    def make() -> Any:
        vk = pytest.importorskip("executorch.backends.vulkan.quantizer.vulkan_quantizer")
        return vk.VulkanQuantizer().set_global(vk.get_symmetric_quantization_config(**config))

    return make


def qnn(dtype: str, block_sizes: dict[str, tuple[int, ...]] | None = None, **config: Any):
    """QnnQuantizer with per-channel conv and linear weights (the configuration ExecuTorch's
    Qualcomm examples use); constructing it may log a failed SDK download offline."""

    def make() -> Any:
        qnn_module = pytest.importorskip("executorch.backends.qualcomm.quantizer.quantizer")
        quantizer = qnn_module.QnnQuantizer()
        quantizer.set_default_quant_config(
            getattr(qnn_module.QuantDtype, dtype),
            is_conv_per_channel=True,
            is_linear_per_channel=True,
            **config,
        )
        if block_sizes:
            quantizer.set_block_size_map(dict(block_sizes))
        return quantizer

    return make


def cadence() -> Any:
    module = pytest.importorskip("executorch.backends.cadence.aot.quantizer.quantizer")
    return module.CadenceDefaultQuantizer()


def coreml_a8w8() -> Any:
    """CoreML's static int8 configuration (its ExecuTorch tester's default)."""
    coreml = pytest.importorskip("executorch.backends.apple.coreml.quantizer")
    ct_quantization = pytest.importorskip("coremltools.optimize.torch.quantization")
    config = ct_quantization.LinearQuantizerConfig(
        global_config=ct_quantization.ModuleLinearQuantizerConfig(
            quantization_scheme="symmetric",
            activation_dtype=torch.quint8,
            weight_dtype=torch.qint8,
            weight_per_channel=True,
        )
    )
    return coreml.CoreMLQuantizer(config)


def enn_a8w8() -> Any:
    return pytest.importorskip("executorch.backends.samsung.quantizer.quantizer").EnnQuantizer()


@dataclass(frozen=True)
class Config:
    """One vendor configuration: a fresh-quantizer factory and how its own flow exports."""

    make: Callable[[], Any]
    qat: bool = False
    strict: bool = False
    slow: bool = False
    pattern_modules: tuple[str, ...] = ()  # the vendor's own pattern exporters, to cache


CONFIGS: dict[str, Config] = {
    "xnnpack_per_channel": Config(xnnpack(is_per_channel=True)),
    "xnnpack_dynamic": Config(xnnpack(is_per_channel=True, is_dynamic=True)),
    "xnnpack_qat": Config(xnnpack(is_per_channel=True, is_qat=True), qat=True, slow=True),
    "vulkan_weight_only_w8": Config(vulkan(is_dynamic=False)),
    "vulkan_dynamic_a8w8": Config(vulkan(is_dynamic=True)),
    "qnn_8a8w": Config(qnn("use_8a8w")),
    "qnn_16a8w": Config(qnn("use_16a8w")),
    "qnn_16a4w": Config(qnn("use_16a4w")),
    "qnn_8a8w_qat": Config(qnn("use_8a8w", is_qat=True), qat=True, slow=True),
    "qnn_16a4w_qat": Config(qnn("use_16a4w", is_qat=True), qat=True, slow=True),
    # Cadence's patterns match on strict-export metadata, and its own compiler exports strictly
    "cadence_default": Config(cadence, strict=True),
    "coreml_a8w8_per_channel": Config(coreml_a8w8, slow=True, pattern_modules=(_COREML_PATTERNS,)),
    "enn_a8w8": Config(enn_a8w8),
}


def _params(names) -> list:
    return [pytest.param(n, marks=[pytest.mark.slow] if CONFIGS[n].slow else []) for n in names]


@pytest.fixture(scope="module")
def vendor_pattern_cache():
    """Memo of the pattern exports of the vendors whose configs list ``pattern_modules``
    (torchao's and XNNPACK's are in the session's ``peer_pattern_cache``)."""
    with cached_peer_pattern_exports((_COREML_PATTERNS,)):
        yield


def _compare(config: Config, model: Any, request: pytest.FixtureRequest):
    if config.pattern_modules:
        request.getfixturevalue("vendor_pattern_cache")
    return compare(config.make, model, qat=config.qat, strict=config.strict)


def _dequantize_ops(counts) -> int:
    """Reads of quantized values: what is left of quantization once weights are folded."""
    return sum(n for op, n in counts.items() if "dequantize" in op)


@pytest.mark.parametrize("model", CNN_AND_TRANSFORMER)
@pytest.mark.parametrize("name", _params(CONFIGS))
def test_vendor_quantizer_is_bit_identical(name, model, request, peer_pattern_cache):
    result = _compare(CONFIGS[name], model, request)
    result.assert_same()
    # Cadence matches on export metadata: a metadata change would make it quantize nothing
    assert _dequantize_ops(result.ours.counts) > 0, "the vendor quantized nothing on this model"


# ------------------------------------------------------------------------- embedding tables

#: configurations that quantize ``aten.embedding``'s table, and the dequantize that reads it
EMBEDDING_CONFIGS: dict[str, tuple[Config, str]] = {
    "qnn_8a8w": (CONFIGS["qnn_8a8w"], "dequantize_per_tensor"),
    "qnn_8a8w_embedding_per_channel": (
        Config(qnn("use_8a8w", is_embedding_per_channel=True)),
        "dequantize_per_channel",
    ),
    "qnn_16a4w": (CONFIGS["qnn_16a4w"], "dequantize_per_tensor"),
    "enn_a8w8": (CONFIGS["enn_a8w8"], "dequantize_per_tensor"),
}


def _table_reader(converted: GraphModule) -> str:
    (lookup,) = [n for n in converted.graph.nodes if n.target == _aten.embedding.default]
    return str(lookup.args[0].target).split(".")[-2]


@pytest.mark.parametrize("name", EMBEDDING_CONFIGS)
def test_vendor_embedding_quantization_is_bit_identical(name, request, peer_pattern_cache):
    config, reader = EMBEDDING_CONFIGS[name]
    result = _compare(config, EmbeddingConvLinearModule(), request)
    result.assert_same()
    assert _table_reader(result.ours.converted) == _table_reader(result.theirs.converted) == reader


# --------------------------------------------------------------- QNN per-block (LPBQ) weights

#: QNN's per-block block size for a linear weight (out, in): one output row, 8 inputs. Every
#: linear gets the same one because QNN's Linear rule writes the block size into the observer
#: constructor its per-block config shares (the last linear's would win). Conv weights are
#: left per-channel: QNN's conv rule does not pass a block size on, so torchao's pipeline
#: itself fails on a per-block conv.
LINEAR_BLOCK = (1, 8)


def _per_block_linears(model_name: str) -> dict[str, tuple[int, ...]]:
    """The block-size map for the model's linears (by node name, as QNN keys it)."""
    torch.manual_seed(0)
    model = ZOO[model_name]().eval()
    exported = export_model(model, model.example_inputs())
    return {
        node.name: LINEAR_BLOCK
        for node in exported.graph.nodes
        if node.target == _aten.linear.default
        and node.args[1].meta["val"].shape[1] % LINEAR_BLOCK[1] == 0
    }


def _affine_weights(converted: GraphModule) -> list[torch.Tensor]:
    """The folded integer constants read by torchao's dequantize_affine, in graph order."""
    weights = []
    for node in converted.graph.nodes:
        if str(node.target) == "torchao.dequantize_affine":
            source = node.args[0]
            assert source.op == "get_attr", f"{source.name} was not folded into a constant"
            weights.append(getattr(converted, source.target))
    return weights


@pytest.mark.parametrize("model", CNN_AND_TRANSFORMER)
def test_qnn_per_block_weights_fold_like_torchao(model):
    blocks = _per_block_linears(model)
    assert blocks, "the model has no linear to quantize per block"
    result = compare(qnn("use_16a4w_block", blocks), model)
    result.assert_same()
    # the weights' quantize_affine is folded away, leaving one dequantize_affine per linear
    for outcome in (result.ours, result.theirs):
        assert outcome.counts["torchao.dequantize_affine"] == len(blocks)
        assert outcome.counts["torchao.quantize_affine"] == 0
    ours, theirs = _affine_weights(result.ours.converted), _affine_weights(result.theirs.converted)
    assert len(ours) == len(theirs) == len(blocks)
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype == torch.int8 and torch.equal(a, b)
