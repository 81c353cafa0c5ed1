"""X86InductorQuantizer scoping: module name, module type, function type and global configs.

torchao's x86 quantizer names its setters ``set_module_name_qconfig`` / ``..._type_qconfig``
/ ``set_function_type_qconfig``; ours keeps those names (migrating is an import change) and
their precedence: module name over module type over function type over global, with None
meaning "leave this scope float". The setters refuse an op the recipe does not quantize
(such a config would otherwise be silently ignored). A config that mixes static with dynamic
or QAT with PTQ is ignored with a MixedConfigWarning naming both configs, the config set
first winning, as torchao does (test_x86_inductor_config_parity checks the graphs against it).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pt2e_quant.ops import qdq_ops
from quantizers.x86_inductor.quantizer import (
    MixedConfigWarning,
    X86InductorQuantizer,
    get_x86_inductor_linear_dynamic_fp16_config,
)
from tests.models.x86_patterns import (
    image,
)
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    DQ_CH,
    aten,
    quantize,
    x86_config,
)

CHOOSE_QPARAMS = qdq_ops.CHOOSE_QPARAMS


class Sub(nn.Module):
    """x ─ conv3x3(p1) ─ relu ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class Scoped(nn.Module):
    """x ─ a: Sub ─ b: Sub ─ c: conv1x1 ─ d: Conv1d over the flattened rows ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = Sub(), Sub(), nn.Conv2d(3, 3, 1)
        self.d = nn.Conv1d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.d(torch.flatten(self.c(self.b(self.a(x))), 2))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return image()


def _weight_quantized(converted, conv_target=aten.conv2d.default) -> list[bool]:
    """Per conv in graph order: is its weight a dequantized int8 tensor?"""
    return [n.args[1].target == DQ_CH for n in converted.graph.nodes if n.target == conv_target]


def test_module_name_none_leaves_that_submodule_float() -> None:
    quantizer = X86InductorQuantizer().set_global(x86_config()).set_module_name_qconfig("b", None)
    converted = quantize(Scoped(), quantizer)
    assert _weight_quantized(converted) == [True, False, True]


def test_precedence_module_name_over_type_over_operator_over_global() -> None:
    config = x86_config()
    quantizer = (
        X86InductorQuantizer()
        .set_global(None)
        .set_function_type_qconfig(F.conv2d, config)  # a, b, c
        .set_module_type_qconfig(Sub, None)  # a, b back to float ...
        .set_module_name_qconfig("b", config)  # ... except b
    )
    converted = quantize(Scoped(), quantizer)
    assert _weight_quantized(converted) == [False, True, True]
    assert _weight_quantized(converted, aten.conv1d.default) == [False]


def test_module_type_conv1d() -> None:
    quantizer = X86InductorQuantizer().set_module_type_qconfig(nn.Conv1d, x86_config())
    converted = quantize(Scoped(), quantizer)
    assert _weight_quantized(converted) == [False, False, False]
    assert _weight_quantized(converted, aten.conv1d.default) == [True]


def test_unsupported_function_type_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"cannot quantize .*sigmoid"):
        X86InductorQuantizer().set_function_type_qconfig(torch.sigmoid, x86_config())


def test_module_type_must_be_a_module_class() -> None:
    with pytest.raises(ValueError, match="nn.Module subclass"):
        X86InductorQuantizer().set_module_type_qconfig(torch.cat, x86_config())


def _mixed(call) -> list[warnings.WarningMessage]:
    """Run a setter call, returning the MixedConfigWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, MixedConfigWarning)]


def _quantized_dynamically(converted) -> bool:
    return any(n.target == CHOOSE_QPARAMS for n in converted.graph.nodes)


def test_mixing_static_and_dynamic_warns_and_keeps_the_first() -> None:
    """torchao's behaviour (it warns and skips the later config), so recipes written for it
    keep running: the dynamic config on "a" is dropped and "a" stays static."""
    quantizer = X86InductorQuantizer().set_global(x86_config())
    caught = _mixed(lambda: quantizer.set_module_name_qconfig("a", x86_config(is_dynamic=True)))
    assert len(caught) == 1 and caught[0].filename == __file__  # the user's line
    message = str(caught[0].message)
    assert message.startswith(
        "X86InductorQuantizer.set_module_name_qconfig('a') ignored a dynamic post-training "
        "config (uint8 activations, int8 weights): set_global already set a static "
        "post-training config (uint8 activations, int8 weights), and one model cannot mix "
        "static and dynamic quantization"
    )
    assert "The config set first wins" in message
    converted = quantize(Scoped(), quantizer)
    assert _weight_quantized(converted) == [True, True, True]
    assert not _quantized_dynamically(converted)


def test_a_later_global_config_of_another_mode_is_the_one_ignored() -> None:
    quantizer = X86InductorQuantizer().set_module_name_qconfig("a", x86_config(is_dynamic=True))
    caught = _mixed(lambda: quantizer.set_global(x86_config()))
    assert len(caught) == 1
    assert "set_global ignored a static" in str(caught[0].message)
    assert "set_module_name_qconfig('a') already set a dynamic" in str(caught[0].message)
    assert quantizer.global_config is None
    converted = quantize(Scoped(), quantizer)
    assert _weight_quantized(converted) == [True, False, False]
    assert _quantized_dynamically(converted)


def test_mixing_qat_and_ptq_warns_and_keeps_the_first() -> None:
    quantizer = X86InductorQuantizer().set_global(x86_config())
    caught = _mixed(lambda: quantizer.set_function_type_qconfig(F.linear, x86_config(is_qat=True)))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "set_function_type_qconfig(aten.linear) ignored a static QAT config" in message
    assert "cannot mix QAT and post-training quantization" in message
    assert quantizer.scope_decision(_linear_node())[0] is x86_config()


def test_fp16_linear_config_mixes_with_static_and_dynamic_but_not_qat() -> None:
    """It quantizes no activation, so it has no static / dynamic mode; it is post-training."""
    fp16 = get_x86_inductor_linear_dynamic_fp16_config()
    for mode in ({}, {"is_dynamic": True}):
        quantizer = X86InductorQuantizer().set_global(x86_config(**mode))
        assert _mixed(lambda q=quantizer: q.set_module_type_qconfig(nn.Linear, fp16)) == []
        assert quantizer.scope_decision(_linear_node())[0] is fp16
    quantizer = X86InductorQuantizer().set_global(x86_config(is_qat=True))
    caught = _mixed(lambda: quantizer.set_module_type_qconfig(nn.Linear, fp16))
    assert len(caught) == 1
    assert "ignored a weight-only post-training config (float16 weights)" in str(caught[0].message)


def test_none_and_configs_of_one_mode_never_warn() -> None:
    quantizer = X86InductorQuantizer().set_global(x86_config(is_dynamic=True))
    calls = [
        lambda: quantizer.set_module_name_qconfig("a", None),
        lambda: quantizer.set_module_type_qconfig(Sub, x86_config(is_dynamic=True)),
        lambda: quantizer.set_global(None),
        lambda: quantizer.set_global(x86_config(is_dynamic=True, reduce_range=True)),
    ]
    for call in calls:
        assert _mixed(call) == []


def _linear_node():
    """The linear call of an exported nn.Linear (for scope_decision)."""
    gm = torch.export.export(nn.Linear(4, 4), (torch.randn(1, 4),)).module()
    return next(n for n in gm.graph.nodes if n.target == aten.linear.default)
