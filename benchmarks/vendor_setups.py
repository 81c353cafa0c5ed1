"""The configurations bench_vendors.py times: vendor quantizers and the models they run on.

A configuration is a quantizer written against torchao's classes (an ExecuTorch vendor's or
torchao's own), set up the way the vendor's documentation does, plus how the vendor's flow
exports (strict for Cadence, without guards for Arm, training mode for QAT). Factories import
their vendor lazily, so a missing vendor package skips its configuration, not the benchmark.
The models are ResNet-18's topology at reduced width, a transformer encoder stack and a small
language model for the embedding quantizer, each with a ``--quick`` size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tests.models.zoo_sequence import TransformerEncoder
from tests.models.zoo_vision import ResNetBasicBlock

__all__ = ["CONFIGURATIONS", "MODELS", "Configuration"]

# ---------------------------------------------------------------------------------- models


class ResNet18Like(nn.Module):
    """ResNet-18's topology at a fraction of its width: 7x7 stem, max pool, four stages of two
    basic blocks (in-place relu / add, strided downsample), global pool and classifier.

    ::

        x (1,3,64,64) ─ conv7x7(s2) ─ bn ─ relu ─ maxpool(s2) ─ stage(w) ─ stage(2w, s2)
          ─ stage(4w, s2) ─ stage(8w, s2) ─ adaptive_avg_pool(1) ─ flatten ─ Linear(8w→10)
    """

    def __init__(self, width: int = 16, blocks_per_stage: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(4):
            out_channels = width * 2**stage
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ResNetBasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(1, 3, 64, 64),)


class TinyLanguageModel(nn.Module):
    """Token and position embeddings, a transformer stack and a vocabulary head.

    ::

        ids (2,16) ─ Embedding(vocab) ─ add ─ TransformerEncoder ─ Linear(dim→vocab) ─ logits
        positions  ─ Embedding(16) ────┘
    """

    def __init__(self, vocab: int = 512, dim: int = 64, layers: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.vocab, self.seq = vocab, seq
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(seq, dim)
        self.encoder = TransformerEncoder(layers, dim, num_heads=4)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("position_ids", torch.arange(seq), persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.tokens(ids) + self.positions(self.position_ids)
        return self.head(self.encoder(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randint(0, self.vocab, (2, self.seq)),)


#: model name -> (full-size factory, --quick factory)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module]]] = {
    "resnet18-like": (lambda: ResNet18Like(32), lambda: ResNet18Like(8, blocks_per_stage=1)),
    "transformer": (
        lambda: TransformerEncoder(num_layers=6, dim=64, num_heads=4),
        lambda: TransformerEncoder(num_layers=2),
    ),
    "embedding-lm": (TinyLanguageModel, lambda: TinyLanguageModel(64, 16, layers=1, seq=8)),
}
CNN_AND_TRANSFORMER = ("resnet18-like", "transformer")

# ---------------------------------------------------------------------------- quantizers


def _xnnpack(**config: Any) -> Any:
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xnnpack

    quantization_config = xnnpack.get_symmetric_quantization_config(**config)
    return xnnpack.XNNPACKQuantizer().set_global(quantization_config)


def _vulkan(is_dynamic: bool) -> Any:
    from executorch.backends.vulkan.quantizer import vulkan_quantizer as vulkan

    config = vulkan.get_symmetric_quantization_config(is_dynamic=is_dynamic, weight_bits=8)
    return vulkan.VulkanQuantizer().set_global(config)


def _qnn(dtype_name: str, is_qat: bool = False) -> Any:
    # Without QNN_SDK_ROOT, ExecuTorch's QNN backend tries to download Qualcomm's SDK; an empty
    # value tells it the caller handles the SDK (annotation does not need it).
    os.environ.setdefault("QNN_SDK_ROOT", "")
    from executorch.backends.qualcomm.quantizer.quantizer import QnnQuantizer, QuantDtype

    quantizer = QnnQuantizer()
    quantizer.set_default_quant_config(getattr(QuantDtype, dtype_name), is_qat=is_qat)
    return quantizer


def _cadence() -> Any:
    from executorch.backends.cadence.aot.quantizer.quantizer import CadenceDefaultQuantizer

    return CadenceDefaultQuantizer()


def _coreml() -> Any:
    from coremltools.optimize.torch.quantization.quantization_config import (
        LinearQuantizerConfig,
        QuantizationScheme,
    )
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer

    global_config = {
        "quantization_scheme": QuantizationScheme.symmetric,
        "activation_dtype": torch.quint8,
        "weight_dtype": torch.qint8,
        "weight_per_channel": True,
    }
    return CoreMLQuantizer(LinearQuantizerConfig.from_dict({"global_config": global_config}))


def _samsung() -> Any:
    from executorch.backends.samsung.quantizer.quantizer import EnnQuantizer

    return EnnQuantizer()


def _x86() -> Any:
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    return x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())


def _embedding() -> Any:
    from torchao.quantization.pt2e.quantizer.embedding_quantizer import EmbeddingQuantizer

    return EmbeddingQuantizer()


def _arm() -> Any:
    from executorch.backends.arm.quantizer import TOSAQuantizer, get_symmetric_quantization_config
    from executorch.backends.arm.tosa.specification import TosaSpecification

    quantizer = TOSAQuantizer(TosaSpecification.create_from_string("TOSA-1.0+INT"))
    return quantizer.set_global(get_symmetric_quantization_config())


def _openvino() -> Any:
    from executorch.backends.openvino.quantizer import OpenVINOQuantizer, QuantizationMode

    return OpenVINOQuantizer(mode=QuantizationMode.INT8_SYM)


@dataclass(frozen=True)
class Configuration:
    """One vendor quantizer setup and how its own flow exports (strict, guards, training)."""

    name: str
    make_quantizer: Callable[[], Any]  # a fresh, set-up quantizer per run
    models: tuple[str, ...] = CNN_AND_TRANSFORMER  # keys of MODELS; --quick runs the last
    qat: bool = False  # training-mode export, prepare_qat_pt2e
    strict: bool = False  # torch.export strict mode
    check_guards: bool = True  # ExportedProgram.module(check_guards=...)


CONFIGURATIONS = (
    Configuration("xnnpack per-channel", lambda: _xnnpack(is_per_channel=True)),
    Configuration("xnnpack dynamic", lambda: _xnnpack(is_per_channel=True, is_dynamic=True)),
    Configuration("xnnpack qat", lambda: _xnnpack(is_per_channel=True, is_qat=True), qat=True),
    Configuration("vulkan w8 weight-only", lambda: _vulkan(is_dynamic=False)),
    Configuration("vulkan w8 dynamic", lambda: _vulkan(is_dynamic=True)),
    Configuration("qnn 8a8w", lambda: _qnn("use_8a8w")),
    Configuration("qnn 16a8w", lambda: _qnn("use_16a8w")),
    Configuration("qnn 16a4w", lambda: _qnn("use_16a4w")),
    Configuration("qnn 8a8w qat", lambda: _qnn("use_8a8w", is_qat=True), qat=True),
    Configuration("cadence (strict)", _cadence, strict=True),
    Configuration("coreml a8w8 per-channel", _coreml),
    Configuration("samsung enn", _samsung),
    # torchao's X86 annotator raises on the CNN's in-place residual add in the non-strict IR
    # ("Input partition has more than one output node"), so its rows use strict export
    Configuration("torchao x86 inductor (strict)", _x86, strict=True),
    Configuration("torchao embedding", _embedding, models=("embedding-lm",)),
    Configuration("arm tosa int", _arm, check_guards=False),
    Configuration("openvino int8_sym", _openvino),
)
