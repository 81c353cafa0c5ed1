"""The one matcher: where a :class:`~.language.Rule`'s pattern matches a graph.

Matching follows ``torch.fx``'s ``SubgraphMatcher``, the matcher behind torchao's rewrite, so
torchao's pattern graphs transcribe one to one and match the same nodes:

* an :class:`Op` on an overload packet matches any of its overloads with the arguments exactly
  as written (torchao strips q/dq overloads before matching); on an ``OpOverload`` the
  arguments are compared after filling in schema defaults when their counts differ;
* a :class:`Var` binds a graph node or literal; used again it must see the same value, and a
  node bound to one name cannot be bound to another (so ``a + a`` is not ``x + y``);
* literals compare by type and value;
* every matched op except the root may be used only inside the match (``Op.users`` can ask
  for an exact count of users or for none of this), and a node belongs to at most one match
  of a row (:func:`~.driver.run` sees to that).

A match starts at a node of the rule's start op, in graph order: the root, or the op the rule
names as its ``anchor``. From the root the pattern is matched down its arguments; from an
anchor, up each path of the pattern to a root, each op a user of the node below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.fx import Graph, Node

from pt2e_quant.graph.patterns.language import ANY, INSIDE, Either, Op, Rule, Target, Var

__all__ = ["Match", "candidates", "find", "match"]


@dataclass(slots=True)
class Match:
    """One match: its ``root`` (the pattern's output node), the nodes of its ops in graph
    order, and the bound names (``match["anchor"]``)."""

    root: Node
    nodes: tuple[Node, ...]
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


_UNSET = object()


class _State:
    """One match attempt: bound names, the graph node of each matched Op and the match's
    root node. When an alternative or an argument fails, the bindings made since are undone
    from the ``trail``; ``held`` counts the bindings of each node."""

    __slots__ = ("values", "ops", "held", "trail", "root")

    def __init__(self, root: Node | None) -> None:
        self.values: dict[str, Any] = {}
        self.ops: dict[Op, Node] = {}
        self.held: dict[Node, int] = {}
        self.trail: list[tuple[Any, Any]] = []
        self.root = root  # the node the root op matches, None while climbing below it

    def _hold(self, value: Any, delta: int) -> None:
        if isinstance(value, Node):
            count = self.held.get(value, 0) + delta
            if count:
                self.held[value] = count
            else:
                del self.held[value]

    def bind_op(self, pattern: Op, node: Node) -> None:
        """``pattern`` matched ``node``; its name, if any, binds ``node`` too."""
        self.ops[pattern] = node
        self.held[node] = self.held.get(node, 0) + 1
        self.trail.append((pattern, None))
        if pattern.name is not None:
            self.bind(pattern.name, node)

    def bind(self, name: str, value: Any) -> None:
        previous = self.values.get(name, _UNSET)
        if previous is not _UNSET:
            self._hold(previous, -1)
        self.values[name] = value
        self._hold(value, 1)
        self.trail.append((name, previous))

    def undo(self, mark: int) -> None:
        """Unbind everything bound since the trail was ``mark`` long."""
        trail = self.trail
        while len(trail) > mark:
            key, previous = trail.pop()
            if isinstance(key, Op):
                self._hold(self.ops.pop(key), -1)
                continue
            self._hold(self.values.pop(key), -1)
            if previous is not _UNSET:
                self.values[key] = previous
                self._hold(previous, 1)


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


def _arguments_match(pattern: Op, node: Node, m: _State) -> bool:
    if pattern.any_arguments:
        return True
    args, kwargs = node.args, node.kwargs
    if pattern.open:
        leading = pattern.args[:-1]
        if len(args) < len(leading) or any(k not in kwargs for k in pattern.kwargs):
            return False
        for i, p in enumerate(leading):
            if not _match_value(p, args[i], m):
                return False
        return all(_match_value(p, kwargs[k], m) for k, p in pattern.kwargs.items())
    if len(pattern.args) == len(args) and list(pattern.kwargs) == list(kwargs):
        return _match_args(pattern.args, args, m) and _match_args(
            list(pattern.kwargs.values()), list(kwargs.values()), m
        )
    if pattern.normalizes:
        pattern_args = _all_arguments(node.target, pattern.args, pattern.kwargs)
        node_args = _all_arguments(node.target, args, kwargs)
        return _match_args(pattern_args, node_args, m)
    return False


def _match_op(pattern: Op, node: Node, m: _State) -> bool:
    if pattern in m.ops:
        return m.ops[pattern] is node
    if node in m.held or node.op != "call_function" or node.target not in pattern.targets:
        return False
    users = pattern.users
    if users.__class__ is int and node is not m.root and len(node.users) != users:
        return False
    if pattern.check is not None and not pattern.check(node):
        return False
    mark = len(m.trail)
    m.bind_op(pattern, node)
    if not _arguments_match(pattern, node, m):
        m.undo(mark)
        return False
    return True


def _match_args(patterns: list[Any] | tuple[Any, ...], values: Any, m: _State) -> bool:
    if len(patterns) != len(values):
        return False
    return all(_match_value(p, v, m) for p, v in zip(patterns, values, strict=True))


def _match_value(pattern: Any, value: Any, m: _State) -> bool:
    if isinstance(pattern, Op):
        return isinstance(value, Node) and _match_op(pattern, value, m)
    if pattern is ANY:
        return True
    if isinstance(pattern, Either):
        for alternative in pattern.alternatives:
            mark = len(m.trail)
            if _match_value(alternative, value, m):
                return True
            m.undo(mark)
        return False
    if isinstance(pattern, Var):
        if pattern.name in m.values:
            bound = m.values[pattern.name]
            return bound is value if isinstance(value, Node) else bound == value
        if isinstance(value, Node) and value in m.held:
            return False
        m.bind(pattern.name, value)
        return True
    if isinstance(value, Node):
        return False
    if isinstance(pattern, (list, tuple)) and isinstance(value, (list, tuple)):
        return _match_args(pattern, value, m)
    return type(pattern) is type(value) and pattern == value


def _contained(m: _State) -> bool:
    """No op but the root whose ``users`` is ``INSIDE`` is read outside the match (its
    output would be lost)."""
    matched = set(m.ops.values())
    return all(
        user in matched
        for pattern, node in m.ops.items()
        if node is not m.root and pattern.users == INSIDE
        for user in node.users
    )


def _accept(rule: Rule, m: _State, root: Node) -> Match | None:
    """The match ``m`` ending at ``root`` if it keeps its ops' outputs inside and its row's
    condition holds."""
    if rule.confined and not _contained(m):
        return None
    if rule.where is not None and not rule.where(**m.values):
        return None
    return Match(root, tuple(sorted(m.ops.values())), m.values)


def _may_climb(path: tuple[Op, ...], node: Node) -> bool:
    """A cheap first look: ``node`` has the users ``path[0]`` asks for, one of them calling
    a target of ``path[1]``."""
    count, users, targets = path[0].users, node.users, path[1].targets
    if count == 1:
        return len(users) == 1 and next(iter(users)).target in targets
    if count.__class__ is int and len(users) != count:
        return False
    return any(user.target in targets for user in users)


def _climb(rule: Rule, path: tuple[Op, ...], step: int, node: Node, m: _State) -> Match | None:
    """Match the ops of ``path`` above ``path[step]``, which matched ``node``: the next op
    must match a user of ``node`` (its users in graph order), and so on up to the root."""
    if step == len(path) - 1:
        return _accept(rule, m, node)
    above = path[step + 1]
    users = list(node.users) if len(node.users) == 1 else sorted(node.users)
    for user in users:
        if user.op != "call_function" or user.target not in above.targets:
            continue
        mark = len(m.trail)
        m.root = user if step + 2 == len(path) else None
        if _match_op(above, user, m):
            found = _climb(rule, path, step + 1, user, m)
            if found is not None:
                return found
        m.undo(mark)
    return None


def match(rule: Rule, node: Node) -> Match | None:
    """The match of ``rule`` that starts at ``node`` (its root, or its anchor), if any.

    From the root, the pattern is matched down its arguments. From an anchor, each path of
    the pattern up to a root is tried in turn (:attr:`Rule.paths`): the anchor matches
    ``node``, then each op on the path a user of the node below it, its other arguments
    matched down as from a root.
    """
    if rule.anchor is None:
        m = _State(node)
        return _accept(rule, m, node) if _match_value(rule.pattern, node, m) else None
    for path in rule.paths:
        if len(path) == 1 and path[0].bare:  # a lone op taking any arguments: no state
            if node.op != "call_function" or node.target not in path[0].targets:
                return None
            values = {} if path[0].name is None else {path[0].name: node}
            if rule.where is None or rule.where(**values):
                return Match(node, (node,), values)
            continue
        if len(path) > 1 and not _may_climb(path, node):
            continue
        m = _State(node if len(path) == 1 else None)
        if _match_op(path[0], node, m):
            found = _climb(rule, path, 0, node, m)
            if found is not None:
                return found
    return None


def candidates(graph: Graph, targets: frozenset[Target]) -> list[Node]:
    """The calls of ``targets`` in ``graph``, in graph order."""
    calls = [
        nodes
        for target in targets
        if (nodes := graph.find_nodes(op="call_function", target=target, sort=False))
    ]
    return sorted(calls[0] if len(calls) == 1 else [n for nodes in calls for n in nodes])


def find(
    graph: Graph,
    rule: Rule,
    skip: Callable[[Node], bool] | None = None,
    starts: list[Node] | None = None,
) -> list[Match]:
    """Every match of ``rule`` in ``graph``, in graph order of the nodes they start at
    (``starts``, by default the calls of the rule's :attr:`~Rule.targets`), except from
    nodes for which ``skip(node)`` holds.

    Matches may overlap; :func:`~.driver.run` keeps the first of overlapping ones.
    """
    found = []
    for node in starts if starts is not None else candidates(graph, rule.targets):
        if skip is not None and skip(node):
            continue
        m = match(rule, node)
        if m is not None:
            found.append(m)
    return found
