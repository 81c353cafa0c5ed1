"""X86InductorQuantizer scoping: module name, module type, function type and global configs.

torchao's x86 quantizer names its setters ``set_module_name_qconfig`` / ``..._type_qconfig``
/ ``set_function_type_qconfig``; ours keeps those names (migrating is an import change) and
their precedence: module name over module type over function type over global, with None
meaning "leave this scope float". The setters also refuse what the recipe cannot honour (an
op it does not quantize, mixing static with dynamic or QAT with PTQ), because such a config
would otherwise be silently ignored.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers.x86_inductor import X86InductorQuantizer
from tests.quantizers._x86_inductor_pattern_models import (
    DQ_CH,
    aten,
    image,
    quantize,
    x86_config,
)


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


def test_mixing_static_and_dynamic_is_an_error() -> None:
    quantizer = X86InductorQuantizer().set_global(x86_config())
    with pytest.raises(ValueError, match="static and dynamic"):
        quantizer.set_module_name_qconfig("a", x86_config(is_dynamic=True))


def test_mixing_qat_and_ptq_is_an_error() -> None:
    quantizer = X86InductorQuantizer().set_global(x86_config())
    with pytest.raises(ValueError, match="is_qat"):
        quantizer.set_function_type_qconfig(F.linear, x86_config(is_qat=True))
