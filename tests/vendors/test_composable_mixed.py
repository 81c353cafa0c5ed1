"""A composition of our quantizers and a vendor's, against torchao's composition of theirs.

Migrating a flow that composes torchao's ``EmbeddingQuantizer`` with ExecuTorch's
``XNNPACKQuantizer`` is an import change: our ``ComposableQuantizer`` and ``EmbeddingQuantizer``
take their places, the vendor quantizer stays as it is, and the model comes out bit-identical
to torchao's ``ComposableQuantizer([EmbeddingQuantizer(), XNNPACKQuantizer()])``. Order is
kept; in both, the table is claimed first and XNNPACK quantizes the conv and linear after it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from quantizers.composable import ComposableQuantizer
from quantizers.embedding import EmbeddingQuantizer
from tests.models import EmbeddingConvLinearModule
from tests.vendors.differential import compare

pytestmark = pytest.mark.vendor


def _xnnpack(**config: Any) -> Any:
    xnnpack = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    return xnnpack.XNNPACKQuantizer().set_global(
        xnnpack.get_symmetric_quantization_config(**config)
    )


def _torchao(name: str) -> Any:
    return pytest.importorskip(f"torchao.quantization.pt2e.quantizer.{name}")


XNNPACK_CONFIGS = {
    "static_per_channel": {"is_per_channel": True},
    "dynamic_per_channel": {"is_per_channel": True, "is_dynamic": True},
}


#: the weight argument's position per op
_WEIGHT = {
    torch.ops.aten.embedding.default: 0,
    torch.ops.aten.conv2d.default: 1,
    torch.ops.aten.linear.default: 1,
}


def _reader(converted: torch.fx.GraphModule, target) -> str:
    """The op that produces the weight of the (only) ``target`` node."""
    (node,) = [n for n in converted.graph.nodes if n.target == target]
    return str(node.args[_WEIGHT[target]].target)


@pytest.mark.parametrize("config", XNNPACK_CONFIGS)
def test_ours_composing_a_vendor_matches_torchao_composing_it(config):
    def theirs() -> Any:
        embedding = _torchao("embedding_quantizer").EmbeddingQuantizer()
        composable = _torchao("composable_quantizer").ComposableQuantizer
        return composable([embedding, _xnnpack(**XNNPACK_CONFIGS[config])])

    def ours() -> ComposableQuantizer:
        return ComposableQuantizer([EmbeddingQuantizer(), _xnnpack(**XNNPACK_CONFIGS[config])])

    result = compare(theirs, EmbeddingConvLinearModule(), make_ours=ours)
    result.assert_same()
    per_channel = "quantized_decomposed.dequantize_per_channel.default"
    for outcome in (result.ours, result.theirs):
        # the table: uint8 rows read through their float-qparams dequantize ...
        assert _reader(outcome.converted, torch.ops.aten.embedding.default) == per_channel
        # ... and XNNPACK's per-channel int8 weights on the conv and the linear
        assert _reader(outcome.converted, torch.ops.aten.conv2d.default) == per_channel
        assert _reader(outcome.converted, torch.ops.aten.linear.default) == per_channel


def test_torchaos_composition_of_vendors_runs_unchanged_through_ours():
    """Without the import change: torchao's ComposableQuantizer itself, as a foreign one."""

    def theirs() -> Any:
        embedding = _torchao("embedding_quantizer").EmbeddingQuantizer()
        composable = _torchao("composable_quantizer").ComposableQuantizer
        return composable([embedding, _xnnpack(is_per_channel=True)])

    compare(theirs, EmbeddingConvLinearModule()).assert_same()
