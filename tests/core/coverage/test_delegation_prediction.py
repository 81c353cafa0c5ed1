"""explain()'s XNNPACK prediction against the real partitioner.

Each model is quantized with our XNNPACKQuantizer, explained, then re-exported and lowered with
``XnnpackPartitioner(config_precisions=STATIC_QUANT)``. The partitioner still takes a float
op into a delegate alone (e.g. the add / clamp / mul that ``hardswish`` decomposes into), so
the int8 ops are told apart inside each delegate's graph the way the partitioner does: they
read dequantized inputs (or are an activation fused after such an op). They are counted per op
family (edge ops: ``conv2d`` arrives as ``convolution``, ``adaptive_avg_pool2d`` as ``mean``)
and compared with the families of the rows predicted ``"xnnpack int8"``.

Lowering takes 3-17 s per model, so four models cover the op families: conv + fused relu +
residual add (ResNet), depthwise conv, pool, mul and float hardswish / hardsigmoid
(MobileNetV3), linear + float matmul / softmax / gelu / layer norm (transformer), transposed
conv (decoder).
"""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch

from pt2e_quant.coverage import explain
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.xnnpack.delegation import INT8
from tests.core.coverage.test_prediction_constraints import ConvPoolConv, ConvThen
from tests.ptq import quantize_once, quantize_zoo_model

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

from executorch.backends.xnnpack.partition.config.xnnpack_config import (  # noqa: E402
    ConfigPrecisionType,
)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: E402
    XnnpackPartitioner,
)
from executorch.exir import to_edge_transform_and_lower  # noqa: E402

MODELS = (
    "resnet_basic_block_downsample",
    "mobilenet_v3_block",
    "transformer_encoder_block",
    "conv_transpose_decoder",
)

#: edge op name -> the family our report uses; anything else delegated is a shape / copy op
EDGE_FAMILIES = {
    "convolution": "conv",
    "linear": "linear",
    "addmm": "linear",
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "cat": "cat",
    "relu": "activation",
    "hardtanh": "activation",
    "clamp": "activation",
    "max_pool2d": "pool",
    "mean": "pool",
}
OUR_FAMILIES = {
    "conv2d": "conv",
    "conv1d": "conv",
    "conv_transpose2d": "conv",
    "linear": "linear",
    "add": "add",
    "mul": "mul",
    "cat": "cat",
    "relu": "activation",
    "hardtanh": "activation",
    "max_pool2d": "pool",
    "adaptive_avg_pool2d": "pool",
    "mean": "pool",
}


def _edge_name(node) -> str:
    return getattr(getattr(node.target, "_op", node.target), "_opname", "")


def _reads_dequantized(node) -> bool:
    """Every tensor input but a conv / linear bias is a dequantize: the partitioner's own test
    for a statically quantized node (a float op it also delegates reads no dequantize)."""
    inputs = list(node.all_input_nodes)
    if _edge_name(node) in ("convolution", "linear") and len(inputs) > 2:
        inputs = inputs[:2]
    return bool(inputs) and all("dequantize" in _edge_name(a) for a in inputs)


def _delegated_families(edge_program) -> Counter:
    """Per family, the delegated ops that run int8: they read dequantized inputs, or are an
    activation fused after such an op."""
    found: Counter = Counter()
    for module in edge_program.graph_module.children():
        original = getattr(module, "original_module", None)
        if original is None:
            continue
        int8 = set()
        for node in original.graph_module.graph.nodes:
            name = _edge_name(node)
            if node.op != "call_function" or name not in EDGE_FAMILIES:
                continue
            fused = EDGE_FAMILIES[name] == "activation" and node.args[0] in int8
            if _reads_dequantized(node) or fused:
                int8.add(node)
                found[EDGE_FAMILIES[name]] += 1
    return found


def _assert_predictions_match_the_partitioner(converted, example, quantizer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = explain(converted, quantizer)
        partitioner = XnnpackPartitioner(config_precisions=ConfigPrecisionType.STATIC_QUANT)
        edge = to_edge_transform_and_lower(
            torch.export.export(converted, example), partitioner=[partitioner]
        )
    predicted = Counter(
        OUR_FAMILIES[row.op] for row in report.rows if (row.prediction or "").startswith(INT8)
    )
    assert sum(predicted.values()) > 0
    assert predicted == _delegated_families(edge.exported_program())
    assert report.counts["xnnpack int8"] == sum(predicted.values())


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


@pytest.mark.parametrize("name", MODELS)
def test_predicted_int8_ops_are_the_delegated_ones(name: str) -> None:
    quantizer = _xnnpack()
    converted, example = quantize_zoo_model(name, quantizer)
    _assert_predictions_match_the_partitioner(converted, example, quantizer)


@pytest.mark.parametrize("case", ["mean_keepdim", "pool_scoped_out"])
def test_predictions_match_on_a_kept_mean_and_an_unclaimed_op(case: str) -> None:
    """A keepdim mean (its shape check looks behind the dq) and a max-pool the quantizer left
    float between two quantized convs: the partitioner takes both as int8."""
    quantizer = _xnnpack()
    if case == "mean_keepdim":
        model = ConvThen(lambda m, y, x: y.mean((2, 3), keepdim=True))
    else:
        model = ConvPoolConv()
        quantizer.set_module_name("pool", None)
    example = (torch.randn(1, 3, 8, 8),)
    converted = quantize_once(model, example, quantizer)
    _assert_predictions_match_the_partitioner(converted, example, quantizer)
