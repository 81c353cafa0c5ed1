"""``X86InductorQuantizer``: annotate an exported model for Inductor's int8 x86 (oneDNN) kernels.

Flow::

    exported = torch.export.export(model, inputs).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer); calibrate(prepared)
    converted = convert_pt2e(prepared)
    with torch._inductor.config.patch(freezing=True):
        fast = torch.compile(converted)  # Inductor fuses dq -> conv/linear -> q into int8 kernels

The names and the recipe are torchao's (same q/dq structure on the same model), so migrating is
an import change. What differs, on purpose:

* Patterns are recognised from aten ops and data flow (:mod:`quantizers.x86_inductor.rules`),
  not from ``source_fn_stack``, so models exported non-strict with in-place residual adds
  (torchvision's ResNet) quantize instead of crashing, and ``F.relu6`` / ``F.silu`` fuse like
  their modules do. A lone conv1d is quantized too (torchao only quantizes conv1d -> relu).
* Scoping is the shared :class:`~quantizers.scoping.ScopedConfigs`: module name > module type >
  operator type > global, with ``None`` meaning "leave float". A fused pattern takes the config
  of its anchor op (the conv / linear / pooling op). Module types are real module scopes (any
  ``nn.Module`` subclass, ``nn.Conv1d`` included), not aliases of an aten op.
* :meth:`X86InductorQuantizer.validate` rejects configs the x86 kernels cannot run, such as
  float16 weights on a conv (torchao's accepts anything; the rules are in
  :mod:`quantizers.x86_inductor.kernel_constraints`).
* ``addmm(bias, x, w)`` (GPT-2's ``Conv1D``) is quantized like a linear, and the LLM presets
  of :mod:`quantizers.x86_inductor.llm_config` (int8 weight-only, int8 dynamic per token)
  quantize linears and addmm only.
* Importing this module changes no Inductor configuration (torchao's sets a global pre-grad pass).

As in torchao, a setter given a config that mixes static with dynamic, or QAT with PTQ, with
one already set keeps the first and warns (:class:`MixedConfigWarning`, naming both configs
and their setters). ``get_x86_inductor_linear_dynamic_fp16_config()`` (float16 linear
weights, Inductor's ``linear_dynamic_fp16``) mixes with static and dynamic configs. The presets
and that rule live in :mod:`quantizers.x86_inductor.config`.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import Graph, GraphModule, Node

from pt2e_quant.contract.annotation import (
    annotate_input,
    annotate_output,
    is_annotated,
    mark_annotated,
)
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.specs import SharedQuantizationSpec
from pt2e_quant.errors import AnnotationError, describe_node, graph_context
from pt2e_quant.graph.patterns import (
    Match,
    Rule,
    any_annotated,
    chain,
    is_call,
    is_float_tensor,
    run,
)
from pt2e_quant.ops.families import CAT_OPS, FLATTEN_OPS
from quantizers.config import QuantizationConfig, checked_config
from quantizers.scoping import ScopedConfigs
from quantizers.x86_inductor.config import (
    MixedConfigWarning,
    config_name,
    get_default_x86_inductor_quantization_config,
    get_x86_inductor_linear_dynamic_fp16_config,
    mode_conflict,
)
from quantizers.x86_inductor.kernel_constraints import config_problem
from quantizers.x86_inductor.llm_config import is_linear_only
from quantizers.x86_inductor.rules import (
    FUSION_RULES,
    INT8_IN_INT8_OUT_OPS,
    MATMUL_OPS,
    POST_OPS,
    QUANTIZABLE_OPS,
    X86_MUL_OPS,
    FusionRule,
)

__all__ = [
    "MixedConfigWarning",
    "X86InductorQuantizer",
    "get_default_x86_inductor_quantization_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
]

_aten = torch.ops.aten

#: Python callables users name in ``set_function_type_qconfig`` -> the aten op they export to.
_FUNCTION_TO_ATEN: dict[Callable, Any] = {
    F.conv1d: _aten.conv1d,
    F.conv2d: _aten.conv2d,
    F.linear: _aten.linear,
    torch.addmm: _aten.addmm,
    F.max_pool2d: _aten.max_pool2d,
    F.avg_pool2d: _aten.avg_pool2d,
    F.adaptive_avg_pool2d: _aten.adaptive_avg_pool2d,
    torch.cat: _aten.cat,
    torch.flatten: _aten.flatten,
    torch.matmul: _aten.matmul,
    torch.mul: _aten.mul,
}
_QUANTIZABLE_PACKETS = frozenset(op.overloadpacket for op in QUANTIZABLE_OPS)

#: torchao's x86 spelling of the scoping setters (the shared scoping uses XNNPACK's names).
_X86_SETTER_NAMES = {
    "set_operator_type": "set_function_type_qconfig",
    "set_module_type": "set_module_type_qconfig",
    "set_module_name": "set_module_name_qconfig",
}


class X86InductorQuantizer(Quantizer):
    """Quantizes conv / linear fusion patterns, mul, matmul (when scoped) and int8 propagation.

    Setters return ``self`` so calls chain. See the module docstring for the recipe and the
    deliberate differences from torchao's quantizer of the same name.
    """

    coverage_name = "x86"

    def __init__(self) -> None:
        super().__init__()
        self._scoped = ScopedConfigs(setter_names=_X86_SETTER_NAMES)
        # (anchor, config, has_weight) per graph, from the last annotate() of that graph
        self._applied: weakref.WeakKeyDictionary[
            Graph, list[tuple[Node, QuantizationConfig, bool]]
        ] = weakref.WeakKeyDictionary()

    # ------------------------------------------------------------------------- scoping

    @property
    def global_config(self) -> QuantizationConfig | None:
        return self._scoped.global_config

    def set_global(self, quantization_config: QuantizationConfig | None) -> X86InductorQuantizer:
        quantization_config = self._checked_config(quantization_config, "set_global")
        if not self._mixes_with_configs_set(quantization_config, "set_global"):
            self._scoped.global_config = quantization_config
        return self

    def get_global_quantization_config(self) -> QuantizationConfig | None:
        return self._scoped.global_config

    def set_function_type_qconfig(
        self, function_type: Any, quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """Scope by operator: ``F.conv2d``, ``torch.cat``, ``torch.matmul``, ... or an aten op."""
        quantization_config = self._checked_config(quantization_config, "set_function_type_qconfig")
        operator = _FUNCTION_TO_ATEN.get(function_type, function_type)
        if getattr(operator, "overloadpacket", operator) not in _QUANTIZABLE_PACKETS:
            supported = ", ".join(sorted(getattr(f, "__name__", str(f)) for f in _FUNCTION_TO_ATEN))
            raise ValueError(
                f"X86InductorQuantizer cannot quantize {function_type!r}: it quantizes the "
                f"functions {supported} (or their aten ops). Use set_module_name_qconfig / "
                "set_module_type_qconfig to scope a whole submodule."
            )
        scope = self._scoped.operator_label(operator)
        if not self._mixes_with_configs_set(quantization_config, scope):
            self._scoped.set_operator_type(operator, quantization_config)
        return self

    def set_module_type_qconfig(
        self, module_type: type[torch.nn.Module], quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """Every pattern anchored inside a module of this type (e.g. ``nn.Conv1d``)."""
        quantization_config = self._checked_config(quantization_config, "set_module_type_qconfig")
        if not (isinstance(module_type, type) and issubclass(module_type, torch.nn.Module)):
            raise ValueError(
                f"set_module_type_qconfig expects an nn.Module subclass, got {module_type!r}; "
                "use set_function_type_qconfig for functions such as torch.cat"
            )
        scope = self._scoped.module_type_label(module_type)
        if not self._mixes_with_configs_set(quantization_config, scope):
            self._scoped.module_type[module_type] = quantization_config
        return self

    def set_module_name_qconfig(
        self, module_name: str, quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """Every pattern anchored inside the submodule ``module_name`` (e.g. ``"layers.0"``)."""
        quantization_config = self._checked_config(quantization_config, "set_module_name_qconfig")
        scope = self._scoped.module_name_label(module_name)
        if not self._mixes_with_configs_set(quantization_config, scope):
            self._scoped.module_name[module_name] = quantization_config
        return self

    # the names every backend of this package shares
    set_operator_type = set_function_type_qconfig
    set_module_type = set_module_type_qconfig
    set_module_name = set_module_name_qconfig

    def _checked_config(self, config: object, setter: str) -> QuantizationConfig | None:
        """``config`` if it is one of ours or None; a TypeError naming the preset to import
        otherwise (torchao's float16 config is named by its own preset)."""
        weight_dtype = getattr(getattr(config, "weight", None), "dtype", None)
        factory = (
            "get_x86_inductor_linear_dynamic_fp16_config"
            if weight_dtype == torch.float16
            else "get_default_x86_inductor_quantization_config"
        )
        return checked_config(config, f"X86InductorQuantizer.{setter}", factory)

    def _mixes_with_configs_set(self, config: QuantizationConfig | None, scope: str) -> bool:
        """True, with a :class:`MixedConfigWarning`, when ``config`` cannot join the configs
        already set: Inductor lowers one graph either static or dynamic, PTQ or QAT.

        As torchao's quantizer does, the config set first wins and the setter call that
        brings the other mode changes nothing, so recipes written for torchao keep running
        (and quantize the same way). ``None`` (leave float) always fits.
        """
        if config is None:
            return False
        for other_scope, other in self._scoped.configs_by_setter():
            modes = mode_conflict(config, other)
            if modes is None:
                continue
            warnings.warn(
                f"X86InductorQuantizer.{scope} ignored {config_name(config)}: {other_scope} "
                f"already set {config_name(other)}, and one model cannot mix {modes} "
                "quantization (Inductor lowers it as one). The config set first wins, as in "
                "torchao: this call is ignored and its scope keeps the config it had. To use "
                "this config, build every config in its mode.",
                MixedConfigWarning,
                stacklevel=3,
            )
            return True
        return False

    # ------------------------------------------------------- introspection (coverage reports)

    def rule_ops(self) -> frozenset:
        """The aten overloads a rule of this quantizer anchors on (post-ops: :data:`POST_OPS`)."""
        return QUANTIZABLE_OPS

    def post_ops(self) -> frozenset:
        """Ops quantized only fused after a conv / linear, never on their own."""
        return POST_OPS

    def scope_decision(self, node: Node) -> tuple[QuantizationConfig | None, str]:
        """The config the scoping gives ``node`` and the setter that decided it, named as
        this quantizer spells it (``set_module_name_qconfig('head')``). matmul needs an
        explicit scope: the global config leaves it float (see :meth:`_explicit_config`)."""
        config, setter = self._scoped.decide(node)
        if is_call(node, MATMUL_OPS) and setter == "set_global":
            return None, "set_global, which leaves matmul float unless scoped explicitly"
        return config, setter

    # ---------------------------------------------------------------------- annotation

    def annotate(self, model: GraphModule) -> GraphModule:
        """The fusion rows (:data:`FUSION_RULES`, table order), then matmul, mul and int8
        propagation (:data:`_AFTER_FUSION`), all run by the pattern driver."""
        applied: list[tuple[Node, QuantizationConfig, bool]] = []
        self._applied[model.graph] = applied
        quantized_outputs: set[Node] = set()

        def claim(rule: FusionRule, match: Match) -> bool:
            """Claim a fusion pattern, quantized by its anchor's config or (None) left float."""
            if any_annotated(match.nodes):
                return False
            anchor = match["anchor"]
            config = self._scoped.config_for(anchor)
            if rule.qat_only and config is not None and not config.is_qat:
                return False
            mark_annotated(match.nodes)
            if config is not None:
                rule.action(match, rule, config)
                quantized_outputs.add(match.root)
                applied.append((anchor, config, True))
            return True

        def decide(rule: Rule, match: Match) -> bool:
            rule.action(self, match["anchor"], applied, quantized_outputs)
            return True

        run(model.graph, FUSION_RULES, claim, skip=is_annotated, static=True)
        run(model.graph, _AFTER_FUSION, decide, skip=is_annotated, static=True)
        return model

    def _annotate_matmul(self, node: Node, applied: list, quantized_outputs: set[Node]) -> None:
        self._annotate_elementwise(node, self._explicit_config(node), applied, quantized_outputs)

    def _explicit_config(self, node: Node) -> QuantizationConfig | None:
        """The config a scope other than the global one gives ``node``.

        matmul is quantized only when asked for (by operator, module type or module name):
        the global config leaves it float, as torchao's recipe does.
        """
        return dataclasses.replace(self._scoped, global_config=None).config_for(node)

    def _annotate_elementwise(
        self,
        node: Node,
        config: QuantizationConfig | None,
        applied: list,
        quantized_outputs: set[Node],
    ) -> None:
        """Quantize every tensor input of ``node`` (mul, matmul); its output stays float.

        The LLM schemes have kernels for linear layers only, so they leave these ops float.
        """
        if any_annotated([node]) or config is None or is_linear_only(config):
            return
        for arg in node.args:
            if isinstance(arg, Node) and config.input_activation is not None:
                annotate_input(node, arg, config.input_activation)
        mark_annotated([node])
        quantized_outputs.add(node)
        applied.append((node, config, False))

    def _annotate_mul(self, node: Node, applied: list, quantized_outputs: set[Node]) -> None:
        if any_annotated([node]):
            return
        config = self._scoped.config_for(node)
        if config is None:
            mark_annotated([node])  # claimed as float, as for every scope set to None
            return
        lhs, rhs = node.args[0], node.args[1]
        if not (is_float_tensor(lhs) and is_float_tensor(rhs)):
            return  # x * 0.5: nothing for an int8 kernel to do
        if lhs.meta["val"].shape != rhs.meta["val"].shape:
            return  # the int8 mul kernel does not broadcast
        self._annotate_elementwise(node, config, applied, quantized_outputs)

    def _propagate(self, node: Node, applied: list, quantized_outputs: set[Node]) -> None:
        """Keep pooling / flatten / cat on int8 when every input comes out of a quantized op.

        The op's inputs are quantized and its output shares the first input's qparams, so
        Inductor can run ``dq -> maxpool -> q`` as an int8 maxpool with no requantization.
        A flatten is left alone when no user would consume its int8 output.
        """
        if any_annotated([node]):
            return
        config = self._scoped.config_for(node)
        if config is None:
            mark_annotated([node])
            return
        if node.target in FLATTEN_OPS and node.users:
            if not any(is_call(user, QUANTIZABLE_OPS) for user in node.users):
                return
        if node.target in CAT_OPS:
            inputs = list(dict.fromkeys(node.all_input_nodes))
        else:
            inputs = [node.all_input_nodes[0]]
        if not inputs or not all(i in quantized_outputs for i in inputs):
            return
        activation = config.input_activation
        if activation is None or is_linear_only(config):
            return  # weight-only, or per-token activations (no int8 pooling kernel takes them)
        first = inputs[0]
        annotate_input(node, first, activation)
        for other in inputs[1:]:
            annotate_input(node, other, SharedQuantizationSpec((first, node)))
        annotate_output(node, SharedQuantizationSpec((first, node)))
        mark_annotated([node])
        quantized_outputs.add(node)
        applied.append((node, config, False))

    # ---------------------------------------------------------------------- validation

    def validate(self, model: GraphModule) -> None:
        """Reject configs the x86 kernels cannot run, naming the first node that uses one.

        Inductor's oneDNN int8 kernels take uint8 per-tensor activations, int8 weights
        quantized per output channel (symmetric, ``ch_axis=0``) and a float bias; its fp16
        kernel takes float16 linear weights with float activations. Anything else would
        either not fuse (silently slow) or compute wrong values.
        """
        for node, config, has_weight in self._applied.get(model.graph, []):
            problem = config_problem(node, config, has_weight)
            if problem is not None:
                raise AnnotationError(
                    f"X86InductorQuantizer cannot quantize {describe_node(node)}: {problem}\n"
                    + graph_context(node)
                )


#: After the fusion rows, in this order: each lone op goes to the method that decides it,
#: which reads what the rows before quantized (``quantized_outputs``).
_AFTER_FUSION: tuple[Rule, ...] = (
    Rule("matmul", chain(MATMUL_OPS), X86InductorQuantizer._annotate_matmul, anchor="anchor"),
    Rule("mul", chain(X86_MUL_OPS), X86InductorQuantizer._annotate_mul, anchor="anchor"),
    Rule(
        "int8_in_int8_out",
        chain(INT8_IN_INT8_OUT_OPS),
        X86InductorQuantizer._propagate,
        anchor="anchor",
    ),
)
