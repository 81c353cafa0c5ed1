"""Why a compute op stayed float, each reason read from evidence rather than guessed.

Checked in this order, the first that holds is reported:

1. ``unsupported dtype <dtype>``: the op's output (``meta['val']``) is not a float tensor;
   then ``kept float ...``: an accuracy algorithm marked the op to stay float (the
   fallback's "kept float to meet the accuracy target", SmoothQuant's scaling multiply);
2. ``no rule for this op in <backend>``: no rule of the quantizer handles the op (read from
   its rule table through ``quantizer.rule_ops()``, named by ``quantizer.coverage_name``);
3. ``filtered by scope setter (<setter>)``: every quantizer with a rule for the op was told by
   its scoping to leave the node float (``quantizer.scope_decision(node)``);
4. ``inside a <cond/scan/...> sub-graph``: the op reads a body input that arrives float, and
   quantization does not propagate across the higher-order op's boundary;
5. ``written in place by <op>``: the rule annotated the op, but an input it quantizes is
   written in place (through an alias, or a parameter the model updates, like
   ``nn.Embedding(max_norm=...)``'s table), so prepare left that edge float;
6. ``input not quantized``: a rule exists and the op is in scope, but one of its float inputs
   comes from a float producer, so the pattern did not apply;
7. ``pattern not matched by any <backend> rule``: all of the above look fine, yet no rule
   matched (a shape or argument the rule excludes, e.g. a grouped transposed conv).

Without a quantizer only the dtype and the input checks can be made; other float ops read
``no quantizer given``. A quantizer written for torchao (ExecuTorch's vendor quantizers) has
none of the coverage interface (:class:`~pt2e_quant.contract.quantizer.Quantizer`'s
``rule_ops`` / ``post_ops`` / ``scope_decision`` / ``leaf_quantizers``), so each method is read
with a default that claims nothing: checks 2 and 3 are skipped, and a float op that carries no
annotation reads ``not annotated by <quantizer> (it declares no rule table ...)`` right after
check 1, since which of its inputs are float says nothing about why such a quantizer passed it
by; an op it did annotate goes on through checks 4 to 6, and then reads ``left float by
<quantizer>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.fx import Node

from pt2e_quant.contract.annotation import get_annotation, kept_float_reason
from pt2e_quant.coverage.evidence import is_quantized_edge, tensor_inputs
from pt2e_quant.graph.aliasing import first_writer

__all__ = ["float_reason", "leaf_quantizers", "reason_kind"]

#: short key of each reason, for the counts and the summary line
_KINDS = (
    ("unsupported dtype", "unsupported dtype"),
    ("kept float", "kept float"),
    ("no rule", "no rule"),
    ("filtered by scope", "filtered by scope"),
    ("inside a", "inside sub-graph"),
    ("written in place", "written in place"),
    ("input not quantized", "input not quantized"),
    ("pattern not matched", "pattern not matched"),
    ("not annotated by", "not annotated"),
    ("left float by", "left float"),
    ("no quantizer", "no quantizer given"),
)


def reason_kind(reason: str) -> str:
    """The counting key of a reason ("no rule", "filtered by scope", ...)."""
    for prefix, kind in _KINDS:
        if reason.startswith(prefix):
            return kind
    return reason


def leaf_quantizers(quantizer: Any) -> Iterator[Any]:
    """The quantizers that annotate: ``quantizer`` itself, or a composition's members. A
    quantizer without ``leaf_quantizers`` (written for torchao) stands for itself."""
    if quantizer is None:
        return
    leaves = getattr(quantizer, "leaf_quantizers", None)
    yield from leaves() if callable(leaves) else [quantizer]


def _name(quantizer: Any) -> str:
    return getattr(quantizer, "coverage_name", None) or type(quantizer).__name__


def _ops(quantizer: Any, method: str) -> frozenset | None:
    """``quantizer.rule_ops()`` / ``post_ops()``; None when the quantizer does not declare
    them (one written for torchao): which ops it handles is then unknown."""
    declared = getattr(quantizer, method, None)
    return frozenset(declared()) if callable(declared) else None


def _no_rule(node: Node, leaves: list[Any]) -> str | None:
    rule_ops = [_ops(q, "rule_ops") for q in leaves]
    if any(ops is None or node.target in ops for ops in rule_ops):
        return None
    names = "/".join(_name(q) for q in leaves)
    if any(node.target in (_ops(q, "post_ops") or ()) for q in leaves):
        return f"no rule for this op in {names} (only fused after conv/linear)"
    return f"no rule for this op in {names}"


def _scope_filter(node: Node, leaves: list[Any]) -> str | None:
    setters = []
    for quantizer in leaves:
        decide = getattr(quantizer, "scope_decision", None)
        ops = _ops(quantizer, "rule_ops")
        if ops is None or not callable(decide):
            return None  # a quantizer that says nothing of its rules may have annotated it
        if node.target not in ops:
            continue
        config, setter = decide(node)
        if config is not None:
            return None
        setters.append(setter)
    return f"filtered by scope setter ({', '.join(setters)})" if setters else None


def _float_input(node: Node) -> Node | None:
    for arg in tensor_inputs(node):
        if not is_quantized_edge(arg) and arg.op != "get_attr":
            return arg
    return None


def _written_input(node: Node) -> str | None:
    annotation = get_annotation(node)
    if annotation is None:
        return None
    for arg, spec in annotation.input_qspec_map.items():
        if spec is not None and isinstance(arg, Node) and (writer := first_writer(arg)):
            return (
                f"written in place by '{writer.name}' (its input '{arg.name}'; a quantized "
                "copy would miss the write)"
            )
    return None


def float_reason(node: Node, quantizer: Any, body_kind: str | None) -> str:
    """Why ``node`` (a float compute op) was not quantized; ``body_kind`` names the
    higher-order op whose body holds it (None in the top graph)."""
    value: Any = node.meta.get("val")
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if isinstance(value, torch.Tensor) and not value.is_floating_point():
        return f"unsupported dtype {value.dtype}"
    kept = kept_float_reason(node)
    if kept is not None:
        return kept
    leaves = list(leaf_quantizers(quantizer))
    if leaves:
        reason = _no_rule(node, leaves) or _scope_filter(node, leaves)
        if reason is not None:
            return reason
    undeclared = "/".join(_name(q) for q in leaves if _ops(q, "rule_ops") is None)
    if undeclared and get_annotation(node) is None:
        return (
            f"not annotated by {undeclared} (it declares no rule table, so whether it covers "
            "this op is unknown)"
        )
    written = _written_input(node)
    if written is not None:
        return written
    source = _float_input(node)
    if source is not None and body_kind is not None and source.op == "placeholder":
        return f"inside a {body_kind} sub-graph (its input '{source.name}' enters it float)"
    if source is not None:
        return f"input not quantized ('{source.name}' is float)"
    if not leaves:
        return "no quantizer given (pass it to explain() to see why)"
    if undeclared:
        return f"left float by {undeclared} (it annotated the op; no input edge was quantized)"
    return f"pattern not matched by any {'/'.join(_name(q) for q in leaves)} rule"
