"""The vision half of the zoo: scaled-down ResNet, MobileNet V2 / V3, EfficientNet blocks, a
transposed-conv decoder and a conv-bn-relu chain, with the op mix of their full-size originals
(in-place relu / add, depthwise convs, squeeze-excite, hardswish, SiLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _image(channels: int, size: int = 16, batch: int = 1) -> tuple[Tensor, ...]:
    return (torch.randn(batch, channels, size, size),)


def _conv_bn(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    """A bias-free conv with "same" padding and its batch norm, as torchvision builds them."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_ch)]


# --------------------------------------------------------------------------------- ResNet


class ResNetBasicBlock(nn.Module):
    """ResNet-18/34 block, written the torchvision way: in-place ReLU and ``out += identity``.

    The in-place ops are the point: export keeps ``relu_`` / ``add_`` and the library must
    functionalize them before annotating. Downsample is added when the shape changes.

    ::

        x ─┬─ conv3x3(s) ─ bn ─ relu_ ─ conv3x3 ─ bn ─ add_ ─ relu_ ─ out
           └─ [conv1x1(s) ─ bn] ────────────────────────┘
    """

    expansion = 1

    def __init__(self, in_channels: int = 8, channels: int = 8, stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.conv1, self.bn1 = _conv_bn(in_channels, channels, 3, stride)
        self.conv2, self.bn2 = _conv_bn(channels, channels, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.in_channels)


class ResNetBottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), in-place add and ReLU.

    ::

        x ─┬─ conv1x1 ─ bn ─ relu_ ─ conv3x3(s) ─ bn ─ relu_ ─ conv1x1 ─ bn ─ add_ ─ relu_ ─ out
           └─ [conv1x1(s) ─ bn] ──────────────────────────────────────────┘
    """

    expansion = 4

    def __init__(self, in_channels: int = 16, width: int = 4, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.in_channels = in_channels
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.in_channels)


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class TinyResNet(nn.Module):
    """Stem, basic blocks (one strided), a bottleneck, global pool and classifier.

    ::

        x (1,3,16,16) ─ conv3x3 ─ bn ─ relu ─ Basic(8→8) ─ Basic(8→16, s2) ─ Bottleneck(16→16)
          ─ adaptive_avg_pool(1) ─ flatten ─ Linear(16→10) ─ out (1,10)
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, 8, 3), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(
            ResNetBasicBlock(8, 8),
            ResNetBasicBlock(8, 16, stride=2),
            ResNetBottleneck(16, 4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(3)


class BottleneckResNet(nn.Module):
    """ResNet-50's topology: 7x7 stem, max pool, four stages of bottlenecks, pool, classifier.

    The defaults are ResNet-50's sizes (stages of 3/4/6/3 blocks, width 64, 224x224 images,
    25.6M parameters, 16 in-place residual adds and 49 in-place ReLUs) for the calibration
    benchmark; tests pass small ``width`` / ``blocks`` / ``size``. Not in :data:`ZOO`.

    ::

        x (1,3,S,S) ─ conv7x7(s2) ─ bn ─ relu_ ─ maxpool(s2) ─ Bottleneck × blocks[0]
          ─ Bottleneck(s2) ... × blocks[1..3] ─ adaptive_avg_pool(1) ─ flatten ─ Linear ─ out
    """

    def __init__(
        self,
        width: int = 64,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        size: int = 224,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.size = size
        self.stem = nn.Sequential(
            *_conv_bn(3, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers: list[nn.Module] = []
        in_channels = width
        for stage, count in enumerate(blocks):
            stage_width = width * 2**stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(ResNetBottleneck(in_channels, stage_width, stride))
                in_channels = stage_width * ResNetBottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(3, self.size)


# ------------------------------------------------------------------------------ MobileNet


class MobileNetV2Block(nn.Module):
    """Inverted residual: expand, depthwise, linear projection; residual iff shapes match.

    ::

        x ─┬─ conv1x1(×t) ─ bn ─ relu6 ─ dwconv3x3(s) ─ bn ─ relu6 ─ conv1x1 ─ bn ─ [add] ─ out
           └──────────────────────────────────────────────────────────────────┘ (s=1, in=out)
    """

    def __init__(
        self, in_channels: int = 8, out_channels: int = 8, stride: int = 1, expand: int = 4
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.in_channels = in_channels
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            *_conv_bn(in_channels, hidden, 1),
            nn.ReLU6(inplace=True),
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU6(inplace=True),
            *_conv_bn(hidden, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.in_channels)


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck 1x1 convs, gate, scale the input.

    ::

        x ─┬─ adaptive_avg_pool(1) ─ conv1x1 ─ act ─ conv1x1 ─ gate ─┐
           └────────────────────────────────────────────────────── mul ─ out
    """

    def __init__(
        self, channels: int, squeezed: int, act: type[nn.Module], gate: type[nn.Module]
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))
        return x * scale


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck: hardswish, depthwise conv, squeeze-excite with hardsigmoid.

    ::

        x ─┬─ conv1x1 ─ bn ─ hardswish ─ dwconv3x3 ─ bn ─ hardswish ─ SE(relu, hardsigmoid)
           │    ─ conv1x1 ─ bn ─ add ─ out
           └──────────────────┘ (s=1, in=out)
    """

    def __init__(
        self, in_channels: int = 8, expanded: int = 16, out_channels: int = 8, stride: int = 1
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            *_conv_bn(in_channels, expanded, 1),
            nn.Hardswish(),
            *_conv_bn(expanded, expanded, 3, stride, groups=expanded),
            nn.Hardswish(),
            SqueezeExcite(expanded, expanded // 4, nn.ReLU, nn.Hardsigmoid),
            *_conv_bn(expanded, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.in_channels)


class TinyMobileNetV2(nn.Module):
    """Stem, three inverted residuals (one strided, one with residual), pool, classifier.

    ::

        x (1,3,16,16) ─ conv3x3(s2) ─ bn ─ relu6 ─ V2(8→8) ─ V2(8→16, s2) ─ V2(16→16)
          ─ conv1x1 ─ bn ─ relu6 ─ adaptive_avg_pool(1) ─ flatten ─ Linear(32→10) ─ out
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, 8, 3, 2),
            nn.ReLU6(inplace=True),
            MobileNetV2Block(8, 8),
            MobileNetV2Block(8, 16, stride=2),
            MobileNetV2Block(16, 16),
            *_conv_bn(16, 32, 1),
            nn.ReLU6(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(3)


class TinyMobileNetV3(nn.Module):
    """Stem with hardswish, two bnecks, pool, a hardswish MLP head (with dropout).

    ::

        x (1,3,16,16) ─ conv3x3(s2) ─ bn ─ hardswish ─ V3(8→16→8) ─ V3(8→32→16, s2)
          ─ adaptive_avg_pool(1) ─ flatten ─ Linear(16→32) ─ hardswish ─ dropout
          ─ Linear(32→10) ─ out
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, 8, 3, 2),
            nn.Hardswish(),
            MobileNetV3Block(8, 16, 8),
            MobileNetV3Block(8, 32, 16, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(16, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(3)


class EfficientNetBlock(nn.Module):
    """EfficientNet MBConv: SiLU everywhere, SE gated by sigmoid, residual when shapes match.

    ::

        x ─┬─ conv1x1 ─ bn ─ silu ─ dwconv3x3 ─ bn ─ silu ─ SE(silu, sigmoid)
           │    ─ conv1x1 ─ bn ─ add ─ out
           └──────────────────┘ (s=1, in=out)
    """

    def __init__(
        self, in_channels: int = 8, out_channels: int = 8, expand: int = 4, stride: int = 1
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.in_channels = in_channels
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            *_conv_bn(in_channels, hidden, 1),
            nn.SiLU(),
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.SiLU(),
            SqueezeExcite(hidden, max(1, in_channels // 4), nn.SiLU, nn.Sigmoid),
            *_conv_bn(hidden, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.in_channels)


class ConvTransposeDecoder(nn.Module):
    """Upsampling decoder: two stride-2 transposed convs with bn+relu, then a 3x3 conv.

    ::

        x (1,16,4,4) ─ convT4x4(s2)(16→8) ─ bn ─ relu ─ convT4x4(s2)(8→4) ─ bn ─ relu
          ─ conv3x3(4→3) ─ out (1,3,16,16)
    """

    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.up1(x)))
        x = F.relu(self.bn2(self.up2(x)))
        return self.head(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 16, 4, 4),)


class ConvBnReluChain(nn.Module):
    """``num_blocks`` × (conv3x3 ─ bn ─ relu) at constant width: graph size scales linearly,
    which is what the prepare/convert benchmarks sweep (20-200 blocks).

    ::

        x (1,C,8,8) ─ [conv3x3(p1) ─ bn ─ relu] × num_blocks ─ out (1,C,8,8)
    """

    def __init__(self, num_blocks: int = 4, channels: int = 8) -> None:
        super().__init__()
        self.channels = channels
        layers: list[nn.Module] = []
        for _ in range(num_blocks):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)]
            layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def example_inputs(self) -> tuple[Tensor, ...]:
        return _image(self.channels, size=8)
