"""ScopedConfigs.decide: the config and the setter that chose it, which coverage reports name."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from quantizers import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from quantizers.scoping import ScopedConfigs

CONFIG = get_symmetric_quantization_config()


class TwoLinears(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Sequential(nn.Linear(4, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x))


def _linears():
    gm = torch.export.export(TwoLinears(), (torch.randn(1, 4),)).module()
    return [n for n in gm.graph.nodes if n.target == torch.ops.aten.linear.default]


def test_each_setter_is_named_when_it_decides() -> None:
    first, second = _linears()
    scopes = ScopedConfigs(global_config=CONFIG)
    assert scopes.decide(first) == (CONFIG, "set_global")
    scopes.set_operator_type(torch.ops.aten.linear, None)
    assert scopes.decide(first) == (None, "set_operator_type(aten.linear)")
    scopes.module_type[nn.Linear] = CONFIG
    assert scopes.decide(first) == (CONFIG, "set_module_type(Linear)")
    scopes.module_name["b.0"] = None
    assert scopes.decide(second) == (None, "set_module_name('b.0')")
    assert scopes.config_for(second) is None
    scopes.filter_fn = lambda node: False
    assert scopes.decide(first) == (None, "set_filter_function")


def test_x86_names_its_own_setters() -> None:
    """An X86 recipe has no ``set_module_name``: the report must name the setter the user
    called (torchao's ``*_qconfig`` spelling), or they cannot find the line that did it."""
    first, second = _linears()
    config = get_default_x86_inductor_quantization_config()
    quantizer = X86InductorQuantizer().set_global(config)
    assert quantizer.scope_decision(first) == (config, "set_global")
    quantizer.set_function_type_qconfig(torch.nn.functional.linear, None)
    assert quantizer.scope_decision(first) == (None, "set_function_type_qconfig(aten.linear)")
    quantizer.set_module_type_qconfig(nn.Linear, config)
    assert quantizer.scope_decision(first) == (config, "set_module_type_qconfig(Linear)")
    quantizer.set_module_name_qconfig("b.0", None)
    assert quantizer.scope_decision(second) == (None, "set_module_name_qconfig('b.0')")
