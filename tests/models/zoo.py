"""The realistic zoo: scaled-down versions of the architectures people actually quantize.

Widths are 8-16 channels and images 16x16 so a full prepare/calibrate/convert round trip takes
well under a second, yet every block keeps the op mix of its full-size original (in-place
relu/add, depthwise convs, squeeze-excite, layer norm + attention, ...). Control-flow
models live in :mod:`tests.models.control_flow`. The models are defined in
:mod:`tests.models.zoo_vision` and :mod:`tests.models.zoo_sequence`; this module names them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from tests.models.zoo_sequence import (
    EmbeddingBagModel,
    LSTMModel,
    TransformerEncoder,
    TransformerEncoderBlock,
)
from tests.models.zoo_vision import (
    ConvBnReluChain,
    ConvTransposeDecoder,
    EfficientNetBlock,
    MobileNetV2Block,
    MobileNetV3Block,
    ResNetBasicBlock,
    ResNetBottleneck,
    TinyMobileNetV2,
    TinyMobileNetV3,
    TinyResNet,
)

__all__ = [
    "ZOO",
    "ConvBnReluChain",
    "ConvTransposeDecoder",
    "EfficientNetBlock",
    "EmbeddingBagModel",
    "LSTMModel",
    "MobileNetV2Block",
    "MobileNetV3Block",
    "ResNetBasicBlock",
    "ResNetBottleneck",
    "TinyMobileNetV2",
    "TinyMobileNetV3",
    "TinyResNet",
    "TransformerEncoder",
    "TransformerEncoderBlock",
]


# -------------------------------------------------------------------------------- registry

ZOO: dict[str, Callable[[], nn.Module]] = {
    "resnet_basic_block": ResNetBasicBlock,
    "resnet_basic_block_downsample": lambda: ResNetBasicBlock(8, 16, stride=2),
    "resnet_bottleneck": ResNetBottleneck,
    "tiny_resnet": TinyResNet,
    "mobilenet_v2_block": MobileNetV2Block,
    "mobilenet_v3_block": MobileNetV3Block,
    "tiny_mobilenet_v2": TinyMobileNetV2,
    "tiny_mobilenet_v3": TinyMobileNetV3,
    "efficientnet_block": EfficientNetBlock,
    "transformer_encoder_block": TransformerEncoderBlock,
    "transformer_encoder": TransformerEncoder,
    "embedding_bag": EmbeddingBagModel,
    "conv_transpose_decoder": ConvTransposeDecoder,
    "lstm": LSTMModel,
    "conv_bn_relu_chain": ConvBnReluChain,
}
"""Realistic models by name, each a zero-argument factory (for ``pytest.mark.parametrize``)."""
