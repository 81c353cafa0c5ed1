"""Every config setter of every backend quantizer rejects an object that is not our config.

Without the check a wrong object failed later, in ``annotate``, as an attribute error naming
neither the setter nor the fix. The likeliest wrong object is a config built by torchao's or
ExecuTorch's helpers during a half-done migration: same class name, other library's spec
classes inside, so the message must name the class's module and the import to change.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from quantizers import (
    EmbeddingQuantizer,
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from quantizers.embedding.quantizer import get_embedding_quantization_config
from tests.quantizers.x86_inductor._x86_inductor_peer_run import torchao_x86_module

aten = torch.ops.aten

#: (quantizer class, its factory's name, a factory call, setter name -> call(quantizer, config))
BACKENDS: dict[str, tuple[type, str, Callable, dict[str, Callable]]] = {
    "xnnpack": (
        XNNPACKQuantizer,
        "get_symmetric_quantization_config",
        get_symmetric_quantization_config,
        {
            "set_global": lambda q, c: q.set_global(c),
            "set_operator_type": lambda q, c: q.set_operator_type(aten.linear.default, c),
            "set_module_type": lambda q, c: q.set_module_type(nn.Linear, c),
            "set_module_name": lambda q, c: q.set_module_name("fc", c),
        },
    ),
    "x86": (
        X86InductorQuantizer,
        "get_default_x86_inductor_quantization_config",
        get_default_x86_inductor_quantization_config,
        {
            "set_global": lambda q, c: q.set_global(c),
            "set_function_type_qconfig": lambda q, c: q.set_function_type_qconfig(
                torch.nn.functional.linear, c
            ),
            "set_module_type_qconfig": lambda q, c: q.set_module_type_qconfig(nn.Linear, c),
            "set_module_name_qconfig": lambda q, c: q.set_module_name_qconfig("fc", c),
        },
    ),
    "embedding": (
        EmbeddingQuantizer,
        "get_embedding_quantization_config",
        get_embedding_quantization_config,
        {
            "set_global": lambda q, c: q.set_global(c),
            "set_operator_type": lambda q, c: q.set_operator_type(aten.embedding.default, c),
            "set_module_type": lambda q, c: q.set_module_type(nn.Embedding, c),
            "set_module_name": lambda q, c: q.set_module_name("table", c),
        },
    ),
}

SETTERS = [(backend, setter) for backend, entry in BACKENDS.items() for setter in entry[3]]


class QuantizationConfig:
    """Looks like a config from another library: our class's name, another module."""


@pytest.mark.parametrize(("backend", "setter"), SETTERS)
def test_setter_rejects_a_non_config_naming_setter_type_and_factory(backend, setter) -> None:
    cls, factory, _, setters = BACKENDS[backend]
    quantizer = cls()
    with pytest.raises(TypeError) as caught:
        setters[setter](quantizer, "int8")
    message = str(caught.value)
    assert f"{cls.__name__}.{setter}" in message
    assert "got builtins.str" in message
    assert f"quantizers.{factory}()" in message


@pytest.mark.parametrize(("backend", "setter"), SETTERS)
def test_setter_names_the_import_to_change_for_another_librarys_config(backend, setter) -> None:
    cls, factory, _, setters = BACKENDS[backend]
    with pytest.raises(TypeError) as caught:
        setters[setter](cls(), QuantizationConfig())
    message = str(caught.value)
    assert f"{__name__}.QuantizationConfig" in message
    assert "another library" in message
    assert f"from quantizers import {factory}" in message


@pytest.mark.parametrize(("backend", "setter"), SETTERS)
def test_setter_accepts_our_config_and_none(backend, setter) -> None:
    cls, _, factory, setters = BACKENDS[backend]
    quantizer = cls()
    assert setters[setter](quantizer, factory()) is quantizer
    assert setters[setter](quantizer, None) is quantizer


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_rejected_config_leaves_the_previous_global_config(backend) -> None:
    cls, _, factory, setters = BACKENDS[backend]
    config = factory()
    quantizer = setters["set_global"](cls(), config)
    with pytest.raises(TypeError):
        quantizer.set_global(object())
    scopes = quantizer.scopes if backend == "embedding" else quantizer
    assert scopes.global_config is config


def test_embedding_quantizer_constructor_checks_its_config() -> None:
    with pytest.raises(TypeError, match=r"EmbeddingQuantizer\(config\).*got builtins\.str"):
        EmbeddingQuantizer("uint8")


@pytest.mark.torchao
def test_torchaos_x86_config_is_rejected_with_the_import_to_change() -> None:
    """The real half-migration: torchao's factory, our quantizer."""
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        get_default_x86_inductor_quantization_config as torchao_config,
    )

    with pytest.raises(TypeError) as caught:
        X86InductorQuantizer().set_global(torchao_config())
    message = str(caught.value)
    assert "got torchao." in message
    assert "from quantizers import get_default_x86_inductor_quantization_config" in message


@pytest.mark.torchao
def test_torchaos_fp16_linear_config_is_rejected_naming_its_own_preset() -> None:
    """torchao's float16 linear config, passed the way torch's own test passes it, names the
    float16 preset to import (not the int8 one), since ours builds the same config."""
    torchao_config = torchao_x86_module().get_x86_inductor_linear_dynamic_fp16_config()
    with pytest.raises(TypeError) as caught:
        X86InductorQuantizer().set_module_type_qconfig(nn.Linear, torchao_config)
    message = str(caught.value)
    assert "X86InductorQuantizer.set_module_type_qconfig" in message and "got torchao." in message
    assert "from quantizers import get_x86_inductor_linear_dynamic_fp16_config" in message
