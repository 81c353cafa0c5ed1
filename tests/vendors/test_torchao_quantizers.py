"""torchao's own quantizers through torchao's pipeline and ours: bit-identical.

torchao ships quantizers for Inductor on x86, Arm and Intel GPUs, one for embedding tables
and a ``ComposableQuantizer``; all annotate with torchao's classes, so pt2e_quant reads them
at its foreign-annotation boundary. Each runs on the CNN and transformer zoo models (the
embedding quantizer on :class:`~tests.models.EmbeddingConvLinearModule`) through
:func:`tests.vendors.differential.compare`.

Importing torchao's x86 quantizer module (which the Arm and XPU ones import) installs an
Inductor pre-grad pass globally; :func:`_torchao_quantizer` imports them through
:func:`tests._migration_harness._import_x86_peer` and restores the pass.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import pt2e_quant
from pt2e_quant.pipeline.quantizer_calls import QuantizerError
from tests._migration_harness import _import_x86_peer
from tests.models import ZOO, EmbeddingConvLinearModule
from tests.vendors.differential import CNN_AND_TRANSFORMER, compare, export_model

pytestmark = pytest.mark.vendor

_PACKAGE = "torchao.quantization.pt2e.quantizer"


def _torchao_quantizer(name: str) -> Any:
    """``torchao.quantization.pt2e.quantizer.<name>``, leaving Inductor's config as it was."""
    pytest.importorskip(_PACKAGE)
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    try:
        _import_x86_peer()
        return pytest.importorskip(f"{_PACKAGE}.{name}")
    finally:
        inductor_config.pre_grad_custom_pass = before


def x86(**config: Any) -> Callable[[], Any]:
    def make() -> Any:
        xiq = _torchao_quantizer("x86_inductor_quantizer")
        config_ = xiq.get_default_x86_inductor_quantization_config(**config)
        return xiq.X86InductorQuantizer().set_global(config_)

    return make


def arm(**config: Any) -> Callable[[], Any]:
    def make() -> Any:
        aiq = _torchao_quantizer("arm_inductor_quantizer")
        config_ = aiq.get_default_arm_inductor_quantization_config(**config)
        return aiq.ArmInductorQuantizer().set_global(config_)

    return make


def xpu() -> Any:
    xpu_module = _torchao_quantizer("xpu_inductor_quantizer")
    config = xpu_module.get_default_xpu_inductor_quantization_config()
    return xpu_module.XPUInductorQuantizer().set_global(config)


#: torchao's x86 annotator (and XPU's, which inherits it) raises "Input partition has more
#: than one output node" on a non-strict export of the residual blocks: the in-place
#: ``out += identity`` then the block's shared ``self.relu`` module gives one ReLU source
#: partition two outputs. These models are exported strictly for it (same aten ops);
#: :func:`test_x86_annotator_crash_is_named_in_both_pipelines` pins the crash.
NEEDS_STRICT_EXPORT = ("tiny_resnet",)


@dataclass(frozen=True)
class Config:
    make: Callable[[], Any]
    qat: bool = False
    crashes_non_strict: bool = False
    slow: bool = False


CONFIGS: dict[str, Config] = {
    "x86_static": Config(x86(), crashes_non_strict=True),
    "x86_dynamic": Config(x86(is_dynamic=True), crashes_non_strict=True),
    "x86_qat": Config(x86(is_qat=True), qat=True, crashes_non_strict=True, slow=True),
    "arm_static": Config(arm()),
    "arm_dynamic": Config(arm(is_dynamic=True)),
    "arm_qat": Config(arm(is_qat=True), qat=True, slow=True),
    # annotating needs no XPU device: only the kernels Inductor later picks do
    "xpu_static": Config(xpu, crashes_non_strict=True),
}


def _params(names) -> list:
    return [pytest.param(n, marks=[pytest.mark.slow] if CONFIGS[n].slow else []) for n in names]


@pytest.mark.parametrize("model", CNN_AND_TRANSFORMER)
@pytest.mark.parametrize("name", _params(CONFIGS))
def test_torchao_quantizer_is_bit_identical(name, model, peer_pattern_cache):
    config = CONFIGS[name]
    strict = config.crashes_non_strict and model in NEEDS_STRICT_EXPORT
    compare(config.make, model, qat=config.qat, strict=strict).assert_same()


@pytest.mark.parametrize("name", [name for name, c in CONFIGS.items() if c.crashes_non_strict])
def test_x86_annotator_crash_is_named_in_both_pipelines(name):
    """Same failure, same place; ours says whose code and which phase it was."""
    config = CONFIGS[name]
    model = ZOO[NEEDS_STRICT_EXPORT[0]]().train(config.qat)
    exported = export_model(model, model.example_inputs())
    torchao_prepare = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    prepare = "prepare_qat_pt2e" if config.qat else "prepare_pt2e"
    with pytest.raises(ValueError, match="more than one output node"):
        getattr(torchao_prepare, prepare)(copy.deepcopy(exported), config.make())
    quantizer = config.make()
    with pytest.raises(QuantizerError, match="more than one output node") as raised:
        getattr(pt2e_quant, prepare)(exported, quantizer)
    assert f"{type(quantizer).__qualname__} (torchao." in str(raised.value)
    assert "in its annotate()" in str(raised.value)
    assert isinstance(raised.value.__cause__, ValueError)


def embedding() -> Any:
    return _torchao_quantizer("embedding_quantizer").EmbeddingQuantizer()


def embedding_then_x86() -> Any:
    composable = _torchao_quantizer("composable_quantizer")
    return composable.ComposableQuantizer([embedding(), x86()()])


def _embedding_weight_dequantize(converted: torch.fx.GraphModule) -> str:
    (lookup,) = [n for n in converted.graph.nodes if n.target == torch.ops.aten.embedding.default]
    return str(lookup.args[0].target)


@pytest.mark.parametrize("make", [embedding, embedding_then_x86], ids=lambda f: f.__name__)
def test_torchao_embedding_quantizers_are_bit_identical(make):
    result = compare(make, EmbeddingConvLinearModule())
    result.assert_same()
    # the table is stored uint8 with per-row float qparams, read through its dequantize
    for outcome in (result.ours, result.theirs):
        dequantize = _embedding_weight_dequantize(outcome.converted)
        assert dequantize == "quantized_decomposed.dequantize_per_channel.default"
    if make is embedding_then_x86:  # and the conv and linear are quantized by X86 after it
        assert result.ours.counts["quantized_decomposed.quantize_per_tensor.default"] >= 2
