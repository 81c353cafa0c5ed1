"""QAT conv-bn against the peer: ExecuTorch's XNNPACKQuantizer through torchao's QAT pipeline.

Same model (exported in training mode), same training-mode forwards, then convert: the q/dq
and compute ops, in node order, and the converted outputs must be identical. The models use batch norm's default
eps / momentum, since torchao's rewrite resets them to those values (ours keeps the layer's).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant.ops import qdq_ops
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import count_ops, qdq_and_compute_ops
from tests.peer_annotation import library

pytestmark = [pytest.mark.torchao, pytest.mark.executorch]
pytest.importorskip("torchao")
pytest.importorskip("executorch")

_LAYERS = {
    "conv2d": (nn.Conv2d, nn.BatchNorm2d, (2, 3, 8, 8)),
    "conv_transpose2d": (nn.ConvTranspose2d, nn.BatchNorm2d, (2, 3, 8, 8)),
}


class TwoConvBn(nn.Module):
    """conv(bias)-bn-relu, then conv(no bias)-bn: both QAT patterns, one feeding the other.

    One model covers both cases: even with the pattern-export cache, torchao's QAT pipeline
    is the slow part of this file."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        conv_cls, bn_cls, self.shape = _LAYERS[kind]
        self.conv1 = conv_cls(3, 4, 3, bias=True)
        self.bn1 = bn_cls(4)
        self.conv2 = conv_cls(4, 4, 1, bias=False)
        self.bn2 = bn_cls(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def _peer_quantizer():
    xnnpack = pytest.importorskip("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    config = xnnpack.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    return xnnpack.XNNPACKQuantizer().set_global(config)


def _ours_quantizer():
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    return XNNPACKQuantizer().set_global(config)


def _qat_then_convert(name: str, model: nn.Module, batches: list[torch.Tensor]):
    if name == "ours":
        prepare, convert = pt2e_quant.prepare_qat_pt2e, pt2e_quant.convert_pt2e
        to_eval, quantizer = pt2e_quant.move_exported_model_to_eval, _ours_quantizer()
    else:
        peer = library("torchao")
        prepare, convert = peer.prepare_qat_pt2e, peer.convert_pt2e
        to_eval = pytest.importorskip("torchao.quantization.pt2e").move_exported_model_to_eval
        quantizer = _peer_quantizer()
    exported = torch.export.export(copy.deepcopy(model).train(), (batches[0],)).module()
    prepared = prepare(exported, quantizer)
    for batch in batches:
        prepared(batch)
    to_eval(prepared)
    return convert(prepared)


def _qdq_counts(gm) -> dict[str, int]:
    return {str(k): v for k, v in count_ops(gm).items() if "quantize" in str(k)}


def test_same_qdq_and_bit_identical_outputs(peer_pattern_cache) -> None:
    torch.manual_seed(0)
    model = TwoConvBn("conv2d")
    batches = [torch.randn(*model.shape) for _ in range(3)]
    ours = _qat_then_convert("ours", model, batches)
    peer = _qat_then_convert("peer", model, batches)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(peer)
    assert torch.equal(ours(batches[0]), peer(batches[0]))


def test_transposed_conv_weights_quantize_along_output_channels_unlike_the_peer(
    peer_pattern_cache,
) -> None:
    """Deliberate difference: the peer's fused fake-quant drops the spec's ch_axis=1 for a
    transposed conv's weight (its constructor only forwards ch_axis to classes named
    "PerChannel"), so it quantizes along the *input* channels, which the BN fold then mixes.
    Ours quantizes along axis 1, the output channels the fold scales."""
    torch.manual_seed(0)
    model = TwoConvBn("conv_transpose2d")
    batches = [torch.randn(*model.shape) for _ in range(3)]
    ours = _qat_then_convert("ours", model, batches)
    peer = _qat_then_convert("peer", model, batches)
    assert _qdq_counts(ours) == _qdq_counts(peer)
    per_channel = qdq_ops.DEQUANTIZE_PER_CHANNEL

    def axes(gm):
        return [n.args[3] for n in gm.graph.nodes if n.target is per_channel]

    assert axes(ours) == [1, 1]
    assert axes(peer) == [0, 0]
