"""The pattern language of the reference rewrite: rows of (pattern, action), matched in place.

A pattern is a tree of :class:`Op` nodes whose leaves are :class:`Var` placeholders, the
wildcard :data:`ANY` or literals; :class:`Either` tries alternatives. Matching follows
``torch.fx``'s ``SubgraphMatcher``, the matcher behind torchao's rewrite, so torchao's pattern
graphs transcribe one to one and match the same nodes:

* an :class:`Op` on an overload packet matches any of its overloads with the arguments exactly
  as written (torchao strips q/dq overloads before matching); on an ``OpOverload`` the
  arguments are compared after filling in schema defaults when their counts differ;
* a :class:`Var` binds a graph node or literal; used again it must see the same value, and a
  node bound to one name cannot be bound to another (so ``a + a`` is not ``x + y``);
* literals compare by type and value;
* every matched op except the root may be used only inside the match, and a node belongs to
  at most one match of a row.

:data:`ANY` and :class:`Either` are ours, for the exact forms (``exact_forms``): a wildcard
that binds nothing, and a choice between per-tensor and per-channel dequantize or an optional
relu.

:func:`apply` runs one :class:`Rule` over a graph as ``torch.fx``'s subgraph rewriter runs one
pattern: all matches are found first, in graph order of their roots, then each action emits
its replacement before the first user of the match's root, and the matched nodes are erased.
Rows therefore run one after another over the whole graph, which fixes the order of the
emitted nodes to torchao's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch.fx import Graph, Node

from pt2e_quant.contract.annotation import is_annotated
from pt2e_quant.graph.node_meta import copy_debug_handle, port_meta

__all__ = [
    "ANY",
    "Either",
    "Emitter",
    "Op",
    "Rule",
    "Var",
    "any_annotated",
    "apply",
    "is_call",
    "is_float_tensor",
    "next_op",
    "sole_user",
]

Target = Any  # an OpOverload, an OpOverloadPacket or a Python callable such as operator.getitem


@dataclass(frozen=True)
class Var:
    """A placeholder: binds the value at its position under ``name``."""

    name: str


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: matches any argument and binds nothing
ANY = _Any()


@dataclass(frozen=True, eq=False)
class Op:
    """A call of ``target`` (one target or a tuple of them) on ``args`` / ``kwargs``.

    ``name`` binds the matched node itself. Ops are compared by identity, so one Op object
    used twice in a pattern must match one node (a shared ``choose_qparams``).
    """

    target: Target | tuple[Target, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @cached_property
    def targets(self) -> frozenset[Target]:
        """The graph targets this op matches: every overload of a packet."""
        targets = self.target if isinstance(self.target, tuple) else (self.target,)
        expanded: set[Target] = set()
        for target in targets:
            if isinstance(target, torch._ops.OpOverloadPacket):
                expanded.update(getattr(target, name) for name in target.overloads())
            else:
                expanded.add(target)
        return frozenset(expanded)

    @property
    def normalizes(self) -> bool:
        """Whether differing argument lists are compared after filling in schema defaults."""
        first = self.target[0] if isinstance(self.target, tuple) else self.target
        return isinstance(first, torch._ops.OpOverload)


def op(target: Target, *args: Any, name: str | None = None, **kwargs: Any) -> Op:
    """``Op(target, args, kwargs, name)`` written like a call."""
    return Op(target, args, kwargs, name)


@dataclass(frozen=True, eq=False, init=False)
class Either:
    """The first of ``alternatives`` that matches."""

    alternatives: tuple[Any, ...]

    def __init__(self, *alternatives: Any) -> None:
        object.__setattr__(self, "alternatives", alternatives)


Action = Callable[..., Node]


@dataclass(frozen=True)
class Rule:
    """One row: ``action(emit, **bindings)`` replaces every match of ``pattern`` for which
    ``where(**bindings)`` holds, and returns the node that takes the root's place."""

    name: str
    pattern: Op | Either
    action: Action
    where: Callable[..., bool] | None = None


# ------------------------------------------------------------------------------------------
# matching
# ------------------------------------------------------------------------------------------


class _Match:
    """The state of one match attempt: bound names and the graph node of each matched Op."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.ops: dict[Op, Node] = {}

    def copy(self) -> _Match:
        other = _Match()
        other.values, other.ops = dict(self.values), dict(self.ops)
        return other

    def restore(self, saved: _Match) -> None:
        self.values, self.ops = saved.values, saved.ops

    def holds(self, node: Node) -> bool:
        """Whether ``node`` is already bound, to a name or as an op (torch.fx's nodes_map)."""
        return any(v is node for v in self.values.values()) or any(
            v is node for v in self.ops.values()
        )


def _all_arguments(node_target: Any, args: tuple, kwargs: dict) -> list[Any]:
    """Positional and keyword arguments in schema order, defaults filled in (as torch.fx)."""
    values = []
    for i, argument in enumerate(node_target._schema.arguments):
        if argument.name in kwargs:
            values.append(kwargs[argument.name])
        elif not argument.kwarg_only and i < len(args):
            values.append(args[i])
        else:
            values.append(argument.default_value)
    return values


def _match_op(pattern: Op, node: Node, m: _Match) -> bool:
    if pattern in m.ops:
        return m.ops[pattern] is node
    if m.holds(node) or node.op != "call_function" or node.target not in pattern.targets:
        return False
    saved = m.copy()
    m.ops[pattern] = node
    if pattern.name is not None:
        m.values[pattern.name] = node
    same_shape = len(pattern.args) == len(node.args) and list(pattern.kwargs) == list(node.kwargs)
    if same_shape:
        pattern_args = [*pattern.args, *pattern.kwargs.values()]
        node_args = [*node.args, *node.kwargs.values()]
    elif pattern.normalizes:
        pattern_args = _all_arguments(node.target, pattern.args, pattern.kwargs)
        node_args = _all_arguments(node.target, node.args, node.kwargs)
    else:
        m.restore(saved)
        return False
    if not _match_args(pattern_args, node_args, m):
        m.restore(saved)
        return False
    return True


def _match_args(patterns: list[Any] | tuple[Any, ...], values: Any, m: _Match) -> bool:
    if len(patterns) != len(values):
        return False
    return all(_match_value(p, v, m) for p, v in zip(patterns, values, strict=True))


def _match_value(pattern: Any, value: Any, m: _Match) -> bool:
    if pattern is ANY:
        return True
    if isinstance(pattern, Either):
        for alternative in pattern.alternatives:
            saved = m.copy()
            if _match_value(alternative, value, m):
                return True
            m.restore(saved)
        return False
    if isinstance(pattern, Var):
        if pattern.name in m.values:
            bound = m.values[pattern.name]
            return bound is value if isinstance(value, Node) else bound == value
        if isinstance(value, Node) and m.holds(value):
            return False
        m.values[pattern.name] = value
        return True
    if isinstance(pattern, Op):
        return isinstance(value, Node) and _match_op(pattern, value, m)
    if isinstance(value, Node):
        return False
    if isinstance(pattern, (list, tuple)) and isinstance(value, (list, tuple)):
        return _match_args(pattern, value, m)
    return type(pattern) is type(value) and pattern == value


def _roots(pattern: Op | Either) -> Iterator[Op]:
    if isinstance(pattern, Either):
        for alternative in pattern.alternatives:
            yield from _roots(alternative)
    else:
        yield pattern


def _candidates(graph: Graph, pattern: Op | Either) -> list[Node]:
    """Nodes the pattern's root can match, in graph order."""
    targets = {t for root in _roots(pattern) for t in root.targets}
    found = {n for t in targets for n in graph.find_nodes(op="call_function", target=t)}
    return sorted(found)


def _contained(m: _Match, root: Node) -> bool:
    """No matched node but the root is used outside the match (its output would be lost)."""
    matched = set(m.ops.values())
    return all(user in matched for node in matched if node is not root for user in node.users)


def _find(graph: Graph, rule: Rule) -> list[_Match]:
    """Non-overlapping matches of ``rule`` in graph order of their roots."""
    matches, taken = [], set()
    for node in _candidates(graph, rule.pattern):
        m = _Match()
        if not _match_value(rule.pattern, node, m) or not _contained(m, node):
            continue
        if taken.intersection(m.ops.values()):
            continue
        if rule.where is not None and not rule.where(**m.values):
            continue
        taken.update(m.ops.values())
        matches.append(m)
    return matches


# ------------------------------------------------------------------------------------------
# replacing
# ------------------------------------------------------------------------------------------


class Emitter:
    """Inserts call_function nodes before ``before``, each with ``source``'s lowering metadata."""

    def __init__(self, before: Node, source: Node) -> None:
        self.before = before
        self.source = source

    def __call__(self, target: Target, *args: Any) -> Node:
        with self.before.graph.inserting_before(self.before):
            node = self.before.graph.call_function(target, args)
        port_meta(self.source, node)
        return node


def _insertion_point(root: Node) -> Node:
    """Before the root's first user, else before the node after it (torch.fx's rewriter)."""
    return min(root.users) if root.users else root.next


def apply(graph: Graph, rule: Rule) -> bool:
    """Replace every match of ``rule`` in ``graph``; returns whether there was one.

    A match may bind, as a placeholder, the root of an earlier match of the same row (an add
    reading another add's output): it then reads that match's replacement.
    """
    matches = _find(graph, rule)
    replaced: dict[Node, Node] = {}
    for m in matches:
        values = {
            name: replaced.get(v, v) if isinstance(v, Node) else v for name, v in m.values.items()
        }
        root = m.ops[next(r for r in _roots(rule.pattern) if r in m.ops)]
        emit = Emitter(_insertion_point(root), values.get("op", root))
        new = rule.action(emit, **values)
        root.replace_all_uses_with(new)
        copy_debug_handle(root, new)
        replaced[root] = new
        for node in sorted(m.ops.values(), reverse=True):
            graph.erase_node(node)
    return bool(matches)


# ---------------------------------------------------------------------------------------------
# small predicates rule tables match with
# ---------------------------------------------------------------------------------------------


def is_call(node: Any, ops: Iterable[Any]) -> bool:
    """``node`` is a call_function Node whose target is in ``ops``."""
    return isinstance(node, Node) and node.op == "call_function" and node.target in ops


def sole_user(node: Node) -> Node | None:
    """The only user of ``node``, or None when it has zero or several."""
    return next(iter(node.users)) if len(node.users) == 1 else None


def next_op(node: Node, ops: Iterable[Any]) -> Node | None:
    """The sole user of ``node`` if it is a call to one of ``ops`` (e.g. the relu after a conv)."""
    user = sole_user(node)
    return user if is_call(user, ops) else None


def is_float_tensor(node: Any) -> bool:
    """``node`` produces a floating-point tensor (per its export metadata)."""
    value = node.meta.get("val") if isinstance(node, Node) else None
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def any_annotated(nodes: Iterable[Node | None]) -> bool:
    """Some node of a candidate pattern was already claimed by an earlier rule or quantizer."""
    return any(node is not None and is_annotated(node) for node in nodes)
