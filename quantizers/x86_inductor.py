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

* Patterns are recognised from aten ops and data flow (:mod:`quantizers.x86_inductor_rules`),
  not from ``source_fn_stack``, so models exported non-strict with in-place residual adds
  (torchvision's ResNet) quantize instead of crashing, and ``F.relu6`` / ``F.silu`` fuse like
  their modules do. A lone conv1d is quantized too (torchao only quantizes conv1d -> relu).
* Scoping is the shared :class:`~quantizers.scoping.ScopedConfigs`: module name > module type >
  operator type > global, with ``None`` meaning "leave float". A fused pattern takes the config
  of its anchor op (the conv / linear / pooling op). Module types are real module scopes (any
  ``nn.Module`` subclass, ``nn.Conv1d`` included), not aliases of an aten op.
* Mixing static with dynamic, or QAT with PTQ configs raises ``ValueError`` at the setter
  instead of warning and dropping the config; :meth:`X86InductorQuantizer.validate` rejects
  configs the x86 kernels cannot run (torchao's accepts anything).
* Importing this module changes no Inductor configuration (torchao's sets a global pre-grad pass).
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import Graph, GraphModule, Node

from pt2e_quant.annotation import annotate_input, annotate_output, mark_annotated
from pt2e_quant.errors import AnnotationError, describe_node, graph_context
from pt2e_quant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from pt2e_quant.observer import (
    HistogramObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from pt2e_quant.quantizer import Quantizer
from pt2e_quant.specs import QuantizationSpec, SharedQuantizationSpec
from quantizers.config import QuantizationConfig, checked_config
from quantizers.patterns import any_annotated, argument, is_call, is_float_tensor
from quantizers.scoping import ScopedConfigs
from quantizers.x86_inductor_rules import (
    FUSION_RULES,
    INT8_IN_INT8_OUT_OPS,
    MATMUL_OPS,
    POST_OPS,
    QUANTIZABLE_OPS,
    X86_MUL_OPS,
    FusionRule,
    Match,
)

__all__ = ["X86InductorQuantizer", "get_default_x86_inductor_quantization_config"]

_aten = torch.ops.aten
_EPS = 2**-12

#: Python callables users name in ``set_function_type_qconfig`` -> the aten op they export to.
_FUNCTION_TO_ATEN: dict[Callable, Any] = {
    F.conv1d: _aten.conv1d,
    F.conv2d: _aten.conv2d,
    F.linear: _aten.linear,
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


@functools.lru_cache
def get_default_x86_inductor_quantization_config(
    is_qat: bool = False, is_dynamic: bool = False, reduce_range: bool = False
) -> QuantizationConfig:
    """uint8 per-tensor activations, int8 per-channel symmetric weights, float bias.

    Activations are observed with a histogram (PTQ), with nothing at all when dynamic (qparams
    come from each input at run time), or with fused moving-average fake-quant (QAT).
    ``reduce_range`` limits activations to 0..127, for CPUs without VNNI whose int8 dot
    product can overflow 16-bit intermediates.
    """
    if is_qat and is_dynamic:
        act_ctr = FakeQuantize.with_args(
            eps=_EPS, observer=MovingAverageMinMaxObserver.with_args(averaging_constant=1)
        )
    elif is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize.with_args(eps=_EPS)
    elif is_dynamic:
        act_ctr = PlaceholderObserver.with_args(eps=_EPS)
    else:
        act_ctr = HistogramObserver.with_args(eps=_EPS)
    activation = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=127 if reduce_range else 255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=is_dynamic,
        observer_or_fake_quant_ctr=act_ctr,
    )
    if is_qat:
        weight_ctr = FusedMovingAvgObsFakeQuantize.with_args(
            eps=_EPS, observer=MovingAveragePerChannelMinMaxObserver
        )
    else:
        weight_ctr = PerChannelMinMaxObserver.with_args(eps=_EPS)
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,  # output channels of conv (O, I, kH, kW) and linear (O, I) weights
        observer_or_fake_quant_ctr=weight_ctr,
    )
    return QuantizationConfig(activation, activation, weight, None, is_qat)


class X86InductorQuantizer(Quantizer):
    """Quantizes conv / linear fusion patterns, mul, matmul (when scoped) and int8 propagation.

    Setters return ``self`` so calls chain. See the module docstring for the recipe and the
    deliberate differences from torchao's quantizer of the same name.
    """

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
        self._scoped.module_type[module_type] = quantization_config
        return self

    def set_module_name_qconfig(
        self, module_name: str, quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """Every pattern anchored inside the submodule ``module_name`` (e.g. ``"layers.0"``)."""
        quantization_config = self._checked_config(quantization_config, "set_module_name_qconfig")
        self._scoped.module_name[module_name] = quantization_config
        return self

    # the names every backend of this package shares
    set_operator_type = set_function_type_qconfig
    set_module_type = set_module_type_qconfig
    set_module_name = set_module_name_qconfig

    def _checked_config(self, config: object, setter: str) -> QuantizationConfig | None:
        """``config``, checked to be a config that fits the ones already set: one graph is
        either static or dynamic, PTQ or QAT, because Inductor lowers it as one."""
        config = checked_config(
            config,
            f"X86InductorQuantizer.{setter}",
            "get_default_x86_inductor_quantization_config",
        )
        if config is None:
            return None
        for other in self._scoped.all_configs():
            if other.is_qat != config.is_qat:
                raise ValueError(
                    f"X86InductorQuantizer: this config has is_qat={config.is_qat}, but one "
                    f"already set has is_qat={other.is_qat}; QAT and post-training configs "
                    "cannot be mixed in one model. Build all configs with the same is_qat."
                )
            if (
                config.input_activation is not None
                and other.input_activation is not None
                and config.is_dynamic != other.is_dynamic
            ):
                raise ValueError(
                    f"X86InductorQuantizer: this config has is_dynamic={config.is_dynamic}, but "
                    f"one already set has is_dynamic={other.is_dynamic}; static and dynamic "
                    "activation quantization cannot be mixed in one model."
                )
        return config

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
        """Fusion patterns (table order), then mul / matmul, then int8 propagation."""
        applied: list[tuple[Node, QuantizationConfig, bool]] = []
        self._applied[model.graph] = applied
        quantized_outputs: set[Node] = set()
        nodes = list(model.graph.nodes)
        for rule in FUSION_RULES:
            for node in nodes:
                match = rule.match(node)
                if match is None or any_annotated(match.nodes):
                    continue
                config = self._scoped.config_for(match.anchor)
                if rule.qat_only and config is not None and not config.is_qat:
                    continue
                mark_annotated(match.nodes)
                if config is not None:
                    _annotate_fusion(match, rule, config)
                    quantized_outputs.add(match.output)
                    applied.append((match.anchor, config, True))
        for node in nodes:
            if is_call(node, MATMUL_OPS):
                self._annotate_elementwise(
                    node, self._explicit_config(node), applied, quantized_outputs
                )
        for node in nodes:
            if is_call(node, X86_MUL_OPS):
                self._annotate_mul(node, applied, quantized_outputs)
        for node in nodes:
            if is_call(node, INT8_IN_INT8_OUT_OPS):
                self._propagate(node, applied, quantized_outputs)
        return model

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
        """Quantize every tensor input of ``node`` (mul, matmul); its output stays float."""
        if any_annotated([node]) or config is None:
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
        if node.target == _aten.flatten.using_ints and node.users:
            if not any(is_call(user, QUANTIZABLE_OPS) for user in node.users):
                return
        if node.target == _aten.cat.default:
            inputs = list(dict.fromkeys(node.all_input_nodes))
        else:
            inputs = [node.all_input_nodes[0]]
        if not inputs or not all(i in quantized_outputs for i in inputs):
            return
        activation = config.input_activation
        if activation is None:
            return
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
        """Reject configs the x86 int8 kernels cannot run, naming the first node that uses one.

        Inductor's oneDNN kernels take uint8 per-tensor activations, int8 weights quantized
        per output channel (symmetric, ``ch_axis=0``) and a float bias; anything else would
        either not fuse (silently slow) or compute wrong values.
        """
        for node, config, has_weight in self._applied.get(model.graph, []):
            problem = _config_problem(config, has_weight)
            if problem is not None:
                raise AnnotationError(
                    f"X86InductorQuantizer cannot quantize {describe_node(node)}: {problem} "
                    "Start from get_default_x86_inductor_quantization_config() and change only "
                    "the observers.\n" + graph_context(node)
                )


def _annotate_fusion(match: Match, rule: FusionRule, config: QuantizationConfig) -> None:
    """Quantize the anchor's activation and weight (and the add's other operand if asked)."""
    anchor = match.anchor
    specs = [
        (anchor.args[0], config.input_activation),
        (anchor.args[1], config.weight),
        (argument(anchor, "bias"), config.bias),
    ]
    for value, spec in specs:
        if isinstance(value, Node) and spec is not None:
            annotate_input(anchor, value, spec)
    if match.binary is not None and rule.quantize_extra_input:
        if config.input_activation is not None:
            annotate_input(match.binary, match.extra_input, config.input_activation)
    if rule.quantize_output and config.output_activation is not None:
        annotate_output(match.output, config.output_activation)


_UINT8 = (torch.uint8, torch.quint8)
_INT8 = (torch.int8, torch.qint8)


def _spec_text(spec: Any) -> str:
    fields = [f"dtype={getattr(spec, 'dtype', None)}", f"qscheme={getattr(spec, 'qscheme', None)}"]
    if getattr(spec, "ch_axis", None) is not None:
        fields.append(f"ch_axis={spec.ch_axis}")
    return f"{type(spec).__name__}({', '.join(fields)})"


def _config_problem(config: QuantizationConfig, has_weight: bool) -> str | None:
    """What in ``config`` the x86 kernels cannot run (None if nothing)."""
    for role in ("input_activation", "output_activation"):
        spec = getattr(config, role)
        if spec is None:
            continue
        if spec.dtype not in _UINT8 or spec.qscheme not in (None, torch.per_tensor_affine):
            return (
                f"its {role} spec is {_spec_text(spec)}, but x86 int8 kernels take uint8 "
                "activations quantized per tensor (dtype=torch.uint8, "
                "qscheme=torch.per_tensor_affine)."
            )
    if not has_weight:
        return None
    weight = config.weight
    if weight is not None and (
        weight.dtype not in _INT8
        or weight.qscheme != torch.per_channel_symmetric
        or weight.ch_axis != 0
    ):
        return (
            f"its weight spec is {_spec_text(weight)}, but x86 int8 conv/linear kernels take "
            "int8 weights quantized per output channel, symmetric (dtype=torch.int8, "
            "qscheme=torch.per_channel_symmetric, ch_axis=0)."
        )
    bias = config.bias
    if bias is not None and not getattr(bias, "dtype", torch.float32).is_floating_point:
        return (
            f"its bias spec is {_spec_text(bias)}, but x86 int8 conv/linear kernels add a float "
            "bias; set the config's bias to None."
        )
    return None
