"""Which quantization config applies to a node: the scoping setters every backend shares.

A quantizer is configured with a global config and per-scope overrides; the most specific
scope that mentions a node wins:

    module name  >  module type  >  operator type  >  global

Setting a scope to ``None`` means "leave this scope float" (it still wins over the broader
scopes), which is how users exclude a submodule. A filter function, if set, must accept a
node for it to be quantized at all.

Module scopes are read from ``node.meta["nn_module_stack"]``, which ``torch.export`` records.
Operator patterns themselves are recognised from the aten graph (see ``patterns.py``), never
from this metadata; only the scoping setters need it, and they raise a clear error when it is
missing instead of silently matching nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch.fx import Node

from pt2e_quant.errors import AnnotationError, describe_node
from pt2e_quant.graph.node_meta import STRICT_SELF_PREFIX
from quantizers.config import QuantizationConfig

__all__ = ["ScopedConfigs", "module_path_and_types", "UNSET"]

#: marker for "no scope mentions this node" (distinct from an explicit ``None`` = float)
UNSET: Any = object()


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return f"{tp.__module__}.{tp.__qualname__}"
    return str(tp)


def module_path_and_types(node: Node) -> list[tuple[str, str]]:
    """(fully qualified module name, qualified type name) of every module enclosing ``node``."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return []
    entries = []
    for path, tp in stack.values():
        path = path.removeprefix(STRICT_SELF_PREFIX)
        entries.append((path, _type_name(tp)))
    return entries


def _operator_packet(target: Any) -> Any:
    """``aten.conv2d.default`` -> ``aten.conv2d``; other targets unchanged."""
    return getattr(target, "overloadpacket", target)


@dataclass
class ScopedConfigs:
    """The scoping state of one quantizer and the precedence rule, written once."""

    global_config: QuantizationConfig | None = None
    operator_type: dict[Any, QuantizationConfig | None] = field(default_factory=dict)
    module_type: dict[Any, QuantizationConfig | None] = field(default_factory=dict)
    module_name: dict[str, QuantizationConfig | None] = field(default_factory=dict)
    filter_fn: Callable[[Node], bool] | None = None
    #: how the owning quantizer spells its setters, where it differs from XNNPACK's names
    #: (X86: ``set_module_name`` -> ``set_module_name_qconfig``); errors and coverage reports
    #: name the setter the user actually called
    setter_names: dict[str, str] = field(default_factory=dict)

    def _setter(self, name: str) -> str:
        return self.setter_names.get(name, name)

    def set_operator_type(self, operator: Any, config: QuantizationConfig | None) -> None:
        """``operator`` is an aten packet (``torch.ops.aten.conv2d``) or overload."""
        self.operator_type[_operator_packet(operator)] = config

    def all_configs(self) -> list[QuantizationConfig]:
        """Every distinct non-None config set anywhere (for validation and reporting)."""
        found: list[QuantizationConfig] = []
        for _, config in self.configs_by_setter():
            if config not in found:
                found.append(config)
        return found

    def configs_by_setter(self) -> list[tuple[str, QuantizationConfig]]:
        """(the setter call that set it, config) for every non-None config, broadest scope
        first: ``[("set_global", g), ("set_module_name('head')", h)]``. Messages about a
        config name the line of the user's recipe that set it."""
        scopes = [("set_global", self.global_config)]
        scopes += [(self.operator_label(op), c) for op, c in self.operator_type.items()]
        scopes += [(self.module_type_label(tp), c) for tp, c in self.module_type.items()]
        scopes += [(self.module_name_label(name), c) for name, c in self.module_name.items()]
        return [(label, config) for label, config in scopes if config is not None]

    def operator_label(self, operator: Any) -> str:
        return f"{self._setter('set_operator_type')}({_operator_packet(operator)})"

    def module_type_label(self, module_type: Any) -> str:
        return f"{self._setter('set_module_type')}({getattr(module_type, '__name__', module_type)})"

    def module_name_label(self, module_name: str) -> str:
        return f"{self._setter('set_module_name')}({module_name!r})"

    def module_decision(self, node: Node) -> tuple[Any, str]:
        """(config, the setter call that chose it) of the innermost scoped module, or UNSET."""
        if not self.module_name and not self.module_type:
            return UNSET, ""
        entries = module_path_and_types(node)
        if not entries and node.op == "call_function":
            raise AnnotationError(
                f"{describe_node(node)} has no nn_module_stack metadata, so module-name / "
                "module-type scoping cannot tell which module it belongs to. Quantize a model "
                "straight from torch.export.export(...).module(), or scope with "
                f"{self._setter('set_operator_type')} / set_global instead."
            )
        # The innermost enclosing module decides, so nested scopes override outer ones.
        for path, _ in reversed(entries):
            if path in self.module_name:
                return self.module_name[path], self.module_name_label(path)
        type_names = {_type_name(tp): tp for tp in self.module_type}
        for _, type_name in reversed(entries):
            if type_name in type_names:
                tp = type_names[type_name]
                return self.module_type[tp], self.module_type_label(tp)
        return UNSET, ""

    def config_for(self, node: Node) -> QuantizationConfig | None:
        """The config for a pattern anchored at ``node``; None means leave it float."""
        return self.decide(node)[0]

    def decide(self, node: Node) -> tuple[QuantizationConfig | None, str]:
        """``config_for(node)`` and the setter that decided it, e.g. ``"set_module_name('head')"``,
        ``"set_filter_function"`` or ``"set_global"``: coverage reports name it when a scope
        leaves a node float, so users find the line of their recipe that did it."""
        if self.filter_fn is not None and not self.filter_fn(node):
            return None, "set_filter_function"
        scoped, setter = self.module_decision(node)
        if scoped is not UNSET:
            return scoped, setter
        scoped, setter = self.operator_decision(node)
        if scoped is not UNSET:
            return scoped, setter
        return self.global_config, "set_global"

    def operator_decision(self, node: Node) -> tuple[Any, str]:
        """(config, setter) of ``set_operator_type`` for ``node``'s op, or UNSET."""
        if node.op == "call_function":
            packet = _operator_packet(node.target)
            if packet in self.operator_type:
                return self.operator_type[packet], self.operator_label(packet)
        return UNSET, ""
