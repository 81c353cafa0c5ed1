"""The XNNPACK quantizer: int8 quantization the ExecuTorch XNNPACK delegate can run.

Drop-in for ExecuTorch's ``XNNPACKQuantizer`` (same class, method and preset names), built on
our observers and the shared scoping::

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(model, inputs).module(), quantizer)

What gets quantized is the rule table in :mod:`quantizers.xnnpack.rules`. Where we differ from
ExecuTorch on purpose:

* ``set_module_name(name, None)`` / ``set_module_type(tp, None)`` leave that scope float
  (ExecuTorch asserts or ignores), and the filter function and exclusions are honoured by every
  rule, including ``cat`` and the qparam propagation;
* a weight-only config (no activation specs) quantizes just the weights (ExecuTorch crashes);
* only scalars of float-valued add/mul become constants (ExecuTorch also turns the ``1`` of an
  integer ``i + 1`` into a float tensor, which changes the result's dtype);
* integer / boolean values that depend on no input (an attention mask's positions) are
  computed once before annotation (:mod:`quantizers.xnnpack.fold_index_arithmetic`);
* :meth:`XNNPACKQuantizer.validate` rejects specs XNNPACK cannot run (ExecuTorch's is a no-op).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import operator
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation, is_annotated
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.specs import QuantizationSpec, QuantizationSpecBase
from pt2e_quant.errors import AnnotationError, SpecError, describe_node, graph_context
from pt2e_quant.fake_quantize import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    PerTokenFakeQuantize,
    WeightFakeQuantize,
)
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.constants import add_buffer_constant
from pt2e_quant.graph.patterns import Match, any_annotated, is_call, run
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PerGroupMinMaxObserver,
    PerTokenDynamicObserver,
    PlaceholderObserver,
)
from pt2e_quant.ops.families import (
    ADD_OPS,
    ADDMM_OPS,
    BATCH_NORM_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    LINEAR_OPS,
    MUL_OPS,
)
from quantizers.config import QuantizationConfig, checked_config
from quantizers.scoping import ScopedConfigs
from quantizers.xnnpack.fold_index_arithmetic import fold_index_arithmetic
from quantizers.xnnpack.rules import RULE_OPS, RULES, Rule, propagate_shared_qparams

__all__ = [
    "XNNPACKQuantizer",
    "get_per_token_quantization_config",
    "get_symmetric_quantization_config",
    "lift_scalar_operands",
]

_aten = torch.ops.aten
_EPS = 2**-12  # ExecuTorch's floor on scales, so near-constant tensors still quantize finely
_SMALLEST_NORMAL = torch.finfo(torch.float32).smallest_normal  # torchao's per-group scale floor
#: chain nodes that fold into the anchor (a batch norm, the getitem of its training form), so
#: they follow the anchor's module scope rather than their own
_FOLDED_INTO_ANCHOR = BATCH_NORM_OPS | {operator.getitem}


@functools.lru_cache
def get_symmetric_quantization_config(
    is_per_channel: bool = False,
    is_qat: bool = False,
    is_dynamic: bool = False,
    act_qmin: int = -128,
    act_qmax: int = 127,
    weight_qmin: int = -127,
    weight_qmax: int = 127,
) -> QuantizationConfig:
    """int8 per-tensor affine activations and int8 symmetric weights (per channel on request).

    Cached, so equal arguments return the same object: prepare shares an observer between two
    specs only when they compare equal, and their constructors compare by identity.
    """
    act_args: dict[str, Any] = {"eps": _EPS}
    if is_qat and is_dynamic:
        act_ctr: Any = FakeQuantize
        act_args["observer"] = MovingAverageMinMaxObserver.with_args(averaging_constant=1)
    elif is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize
    else:
        act_ctr = PlaceholderObserver if is_dynamic else HistogramObserver
    activation = QuantizationSpec(
        dtype=torch.int8,
        quant_min=act_qmin,
        quant_max=act_qmax,
        qscheme=torch.per_tensor_affine,
        is_dynamic=is_dynamic,
        observer_or_fake_quant_ctr=act_ctr.with_args(**act_args),
    )
    weight_args: dict[str, Any] = {"eps": _EPS}
    if is_qat:
        weight_ctr: Any = FusedMovingAvgObsFakeQuantize
        weight_args["observer"] = (
            MovingAveragePerChannelMinMaxObserver if is_per_channel else MovingAverageMinMaxObserver
        )
    else:
        weight_ctr = PerChannelMinMaxObserver if is_per_channel else MinMaxObserver
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=weight_qmin,
        quant_max=weight_qmax,
        qscheme=torch.per_channel_symmetric if is_per_channel else torch.per_tensor_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=weight_ctr.with_args(**weight_args),
    )
    output = None if is_dynamic else activation
    return QuantizationConfig(activation, output, weight, None, is_qat)


@functools.lru_cache
def get_per_token_quantization_config(
    weight_bits: int = 4, group_size: int | None = 32, is_qat: bool = False
) -> QuantizationConfig:
    """LLM linears for XNNPACK: int8 activations quantized per token at run time, symmetric
    weights folded to integers.

    ``weight_bits=4`` ("8da4w"): -8..7 stored in int8, one scale per ``group_size`` input
    columns (XNNPACK's 4-bit kernels take groups of a multiple of 32). ``weight_bits=8,
    group_size=None`` ("8da8w"): -127..127, one scale per output channel. Only linear layers
    are quantized; the min/max weight scales are torchao's ``Int8DynamicActivationIntxWeight``
    ones (``amax / 7.5`` for int4, eps the smallest normal float). ``is_qat``: the same
    granularities fake-quantized for training (activations per token as at inference, weights
    with qparams from their current value at each step), converting to the same ops.
    """
    if weight_bits == 4:
        if not isinstance(group_size, int) or group_size < 32 or group_size % 32:
            raise SpecError(
                f"get_per_token_quantization_config: 4-bit weights need a group_size that is a "
                f"multiple of 32 (XNNPACK's 4-bit kernels), got {group_size!r}"
            )
        weight_observer: Any = PerGroupMinMaxObserver.with_args(
            group_size=group_size, eps=_SMALLEST_NORMAL
        )
        weight_qmin, weight_qmax = -8, 7
    elif weight_bits == 8:
        if group_size is not None:
            raise SpecError(
                "get_per_token_quantization_config: 8-bit weights are per output channel on "
                f"XNNPACK; pass group_size=None (got {group_size!r})"
            )
        weight_observer = PerChannelMinMaxObserver.with_args(eps=_SMALLEST_NORMAL)
        weight_qmin, weight_qmax = -127, 127
    else:
        raise SpecError(
            f"get_per_token_quantization_config: weight_bits must be 4 or 8, got {weight_bits!r}"
        )
    if is_qat:
        weight_ctr: Any = WeightFakeQuantize.with_args(observer=weight_observer)
        activation_ctr: Any = PerTokenFakeQuantize
    else:
        weight_ctr, activation_ctr = weight_observer, PerTokenDynamicObserver
    activation = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=True,
        observer_or_fake_quant_ctr=activation_ctr,
    )
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=weight_qmin,
        quant_max=weight_qmax,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=weight_ctr,
    )
    return QuantizationConfig(activation, None, weight, None, is_qat)


# ------------------------------------------------------------------ scalar operands


_SCALAR_OPERAND_OPS = frozenset(op for op in ADD_OPS | MUL_OPS if not op._schema.is_mutable)


def lift_scalar_operands(gm: GraphModule) -> bool:
    """Turn the Python-number operand of a float add/mul into a 0-d tensor constant.

    An observer can only watch a graph node, and XNNPACK's quantized add/mul need both operands
    quantized, so ``x + 1.0`` must read its ``1.0`` from a tensor::

        add = aten.add.Tensor(x, 1.0)
    becomes
        _tensor_constant_0 = get_attr[_tensor_constant_0]     # tensor(1.)
        add = aten.add.Tensor(x, _tensor_constant_0)

    The constant takes the result's dtype, and integer-valued adds (loop counters) are left
    alone, so no result changes dtype. Returns whether the graph changed.
    """
    changed = False
    for node in list(gm.graph.nodes):
        value = node.meta.get("val")
        if not is_call(node, _SCALAR_OPERAND_OPS) or not isinstance(value, torch.Tensor):
            continue
        if not value.is_floating_point():
            continue
        args = list(node.args)
        for index, arg in enumerate(args[:2]):
            if not isinstance(arg, numbers.Number) or isinstance(arg, bool):
                continue
            constant = torch.tensor(float(arg), dtype=value.dtype)
            attr = add_buffer_constant(gm, "_tensor_constant_", constant, node)
            fake_mode = getattr(value, "fake_mode", None)
            attr.meta["val"] = fake_mode.from_tensor(constant) if fake_mode else constant
            args[index] = attr
            changed = True
        node.args = tuple(args)
    if changed:
        gm.recompile()
    return changed


# ------------------------------------------------------------------------- validate


_ACTIVATION_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
_WEIGHT_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_INT8 = (torch.int8, torch.qint8)


def _reads(arg: Any, input_node: Node) -> bool:
    """``arg`` is ``input_node``, or the observer prepare inserted on it.

    Annotations stay on the nodes after prepare and still name the original inputs, so
    ``validate`` called on a prepared model must look through the observer modules to tell
    a weight from an activation.
    """
    if arg is input_node:
        return True
    return isinstance(arg, Node) and arg.op == "call_module" and arg.args[:1] == (input_node,)


def _role(node: Node, input_node: Node | None) -> str:
    """ "weight", "bias" or "activation" for an input edge (None: the node's output)."""
    if input_node is not None and is_call(node, CONV_OPS | CONV_TRANSPOSE_OPS | LINEAR_OPS):
        if _reads(argument(node, "weight"), input_node):
            return "weight"
        if _reads(argument(node, "bias"), input_node):
            return "bias"
    if input_node is not None and is_call(node, ADDMM_OPS):  # addmm(bias, x, weight)
        if _reads(node.args[2], input_node):
            return "weight"
        if _reads(node.args[0], input_node):
            return "bias"
    return "activation"


def _check_spec(node: Node, input_node: Node | None, spec: QuantizationSpecBase | None) -> None:
    if spec is None or not hasattr(spec, "dtype"):
        return  # float, or shared / derived: checked where the owning spec is
    role = _role(node, input_node)
    where = f"the {role} '{input_node.name}' of" if input_node is not None else "the output of"
    if role == "bias":
        if spec.dtype not in (torch.float32, torch.float):
            raise AnnotationError(
                f"XNNPACK keeps biases float, but {where} {describe_node(node)} is annotated "
                f"as {spec.dtype}. Set QuantizationConfig.bias to None.\n" + graph_context(node)
            )
        return
    if spec.dtype not in _INT8:
        hint = (
            " XNNPACK runs asymmetric int8, not uint8: use "
            "get_symmetric_quantization_config() (int8, -128..127)."
            if spec.dtype in (torch.uint8, torch.quint8)
            else " Use get_symmetric_quantization_config()."
        )
        raise AnnotationError(
            f"XNNPACK quantizes to int8, but {where} {describe_node(node)} is annotated as "
            f"{spec.dtype}.{hint}\n" + graph_context(node)
        )
    qscheme = getattr(spec, "qscheme", None)
    allowed = _WEIGHT_QSCHEMES if role == "weight" else _ACTIVATION_QSCHEMES
    if qscheme is not None and qscheme not in allowed:
        raise AnnotationError(
            f"XNNPACK supports {role} qschemes {[str(q) for q in allowed]}, but {where} "
            f"{describe_node(node)} uses {qscheme}. Build the config with "
            "get_symmetric_quantization_config(is_per_channel=...).\n" + graph_context(node)
        )


# ------------------------------------------------------------------------ quantizer


class XNNPACKQuantizer(Quantizer):
    """Annotates conv / linear / add / mul / cat / pooling patterns for XNNPACK int8 kernels.

    Configure with the setters (each returns ``self``); precedence is module name > module
    type > operator type > global, and ``None`` leaves a scope float.
    """

    coverage_name = "xnnpack"

    def __init__(self) -> None:
        super().__init__()
        self._scoped = ScopedConfigs()

    # -- configuration (ExecuTorch's names) --------------------------------------------------

    @property
    def global_config(self) -> QuantizationConfig | None:
        """The config ``set_global`` set (ExecuTorch's quantizer exposes it under this name)."""
        return self._scoped.global_config

    def set_global(self, quantization_config: QuantizationConfig | None) -> XNNPACKQuantizer:
        self._scoped.global_config = _checked(quantization_config, "set_global")
        return self

    def set_operator_type(
        self, operator_type: Any, quantization_config: QuantizationConfig | None
    ) -> XNNPACKQuantizer:
        """``operator_type``: an aten packet or overload, e.g. ``torch.ops.aten.linear``."""
        self._scoped.set_operator_type(
            operator_type, _checked(quantization_config, "set_operator_type")
        )
        return self

    def set_module_type(
        self, module_type: type, quantization_config: QuantizationConfig | None
    ) -> XNNPACKQuantizer:
        self._scoped.module_type[module_type] = _checked(quantization_config, "set_module_type")
        return self

    def set_module_name(
        self, module_name: str, quantization_config: QuantizationConfig | None
    ) -> XNNPACKQuantizer:
        self._scoped.module_name[module_name] = _checked(quantization_config, "set_module_name")
        return self

    def set_filter_function(self, filter_fn: Callable[[Node], bool] | None) -> XNNPACKQuantizer:
        """Only nodes for which ``filter_fn(node)`` is true are quantized."""
        self._scoped.filter_fn = filter_fn
        return self

    # -- the Quantizer interface -------------------------------------------------------------

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        for gm in iter_graph_modules(model):
            fold_index_arithmetic(gm)
            lift_scalar_operands(gm)
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        run(model.graph, RULES, self._apply, skip=is_annotated, static=True)
        propagate_shared_qparams(model, excluded=self._excluded_predicate())
        return model

    def validate(self, model: GraphModule) -> None:
        for node in model.graph.nodes:
            annotation = get_annotation(node)
            if annotation is None:
                continue
            for input_node, spec in annotation.input_qspec_map.items():
                _check_spec(node, input_node, spec)
            _check_spec(node, None, annotation.output_qspec)

    # -- introspection (coverage reports) ----------------------------------------------------

    def rule_ops(self) -> frozenset:
        """The aten overloads some rule of this quantizer can quantize."""
        return RULE_OPS

    def scope_decision(self, node: Node) -> tuple[QuantizationConfig | None, str]:
        """The config the scoping gives ``node`` and the setter that decided it."""
        return self._scoped.decide(node)

    # -- helpers -----------------------------------------------------------------------------

    def _apply(self, rule: Rule, match: Match) -> bool:
        """Annotate a match of ``rule`` unless an earlier rule claimed part of it or no config
        covers it; returns whether it was annotated."""
        if any_annotated(match.nodes):
            return False
        anchor = match["anchor"]
        chain = [node for node in match.nodes if node is not anchor]
        config = self._pattern_config(rule, anchor, chain)
        return config is not None and rule.action(anchor, chain, config)

    def _pattern_config(
        self, rule: Rule, anchor: Node, chain: list[Node]
    ) -> QuantizationConfig | None:
        """The config a pattern is quantized with, None to leave it to a later rule.

        ExecuTorch annotates scope by scope (module names, module types, operator types,
        global), each pass claiming the patterns whose nodes all lie in that scope. Reproduced
        here per pattern:

        * the filter function must accept every node of the pattern;
        * a module scope claims a pattern whose fused relu lies in the same scope; a relu
          outside it leaves the pattern to a smaller rule (the lone conv / linear). A fused
          batch norm folds into the conv, so it follows the conv's scope;
        * outside module scopes, an operator-type config covers the whole pattern anchored at
          that operator (conv + relu under ``set_operator_type(aten.conv2d, ...)``); a dynamic
          one takes only the patterns dynamic quantization has and leaves the rest to the
          global config, as ExecuTorch's later global pass does.
        """
        scoped = self._scoped
        nodes = [anchor, *chain]
        if scoped.filter_fn is not None and not all(scoped.filter_fn(n) for n in nodes):
            return None
        config, setter = scoped.module_decision(anchor)
        if any(
            scoped.module_decision(n)[1] != setter
            for n in chain
            if n.target not in _FOLDED_INTO_ANCHOR
        ):
            return None
        if setter:
            return config if config is not None and _fits(rule, config) else None
        config, setter = scoped.operator_decision(anchor)
        if setter and (config is None or _fits(rule, config)):
            return config
        config = scoped.global_config
        return config if config is not None and _fits(rule, config) else None

    def _excluded_predicate(self) -> Callable[[Node], bool]:
        """Nodes the filter function or a ``None`` module scope keep float.

        Propagation follows the producer, not a config (as in ExecuTorch, a view after a
        quantized linear shares its qparams even if only ``aten.linear`` was configured), so
        only explicit exclusions stop it.
        """
        marker = QuantizationConfig(None, None, None, None)
        probe = dataclasses.replace(self._scoped, global_config=marker, operator_type={})
        return lambda node: probe.config_for(node) is None


def _fits(rule: Rule, config: QuantizationConfig) -> bool:
    """Dynamic quantization has only the lone linear / conv patterns."""
    return rule.dynamic or not config.is_dynamic


def _checked(config: object, setter: str) -> QuantizationConfig | None:
    return checked_config(config, f"XNNPACKQuantizer.{setter}", "get_symmetric_quantization_config")
