"""The one driver: rows of (pattern, action) run over a graph, and the rewrite built on it.

:func:`run` takes the rows in table order, each over the whole graph: all of a row's matches
are found first (:func:`~.matcher.find`, in graph order of the node each starts at), then
handed one by one to ``act(rule, match)``, which returns whether it took the match; a match
sharing a node with one already taken by the same row is skipped. A backend's ``act``
annotates (its rows' actions are annotators); :func:`rewrite`'s replaces, as ``torch.fx``'s
subgraph rewriter runs one pattern: each replacement is emitted before the first user of its
match's root, and the matched nodes are erased, which fixes the order of the emitted nodes to
torchao's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch.fx import Graph, Node

from pt2e_quant.graph.node_meta import copy_debug_handle, port_meta
from pt2e_quant.graph.patterns.language import Rule, Target
from pt2e_quant.graph.patterns.matcher import Match, candidates, find

__all__ = ["Emitter", "apply", "rewrite", "run"]

R = TypeVar("R", bound=Rule)


def run(
    graph: Graph,
    rules: Iterable[R],
    act: Callable[[R, Match], bool],
    skip: Callable[[Node], bool] | None = None,
    *,
    static: bool = False,
) -> bool:
    """Run ``rules`` in order over ``graph``; returns whether ``act`` took any match.

    ``skip(node)``, asked before each row, leaves out the matches that would start at
    ``node``: a shortcut for what ``act`` would refuse anyway (a backend's already claimed
    anchor), so it must stay true for the rest of the row. ``static``: ``act`` does not
    change the graph (it annotates), so rows starting on the same targets share one lookup
    of their calls.
    """
    changed = False
    starts: dict[frozenset, list[Node]] = {}
    for rule in rules:
        if static and rule.targets not in starts:
            starts[rule.targets] = candidates(graph, rule.targets)
        taken: set[Node] = set()
        for m in find(graph, rule, skip, starts.get(rule.targets)):
            if taken.isdisjoint(m.nodes) and act(rule, m):
                taken.update(m.nodes)
                changed = True
    return changed


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


def rewrite(graph: Graph, rules: Iterable[Rule]) -> bool:
    """Replace every match of each row by ``action(emit, **bindings)``'s result (the node
    that takes the root's place); returns whether anything was replaced.

    A match may bind, as a placeholder, the root of an earlier match of the same row (an add
    reading another add's output): it then reads that match's replacement.
    """
    replaced: dict[Node, Node] = {}

    def replace(rule: Rule, m: Match) -> bool:
        values = {
            name: replaced.get(v, v) if isinstance(v, Node) else v for name, v in m.values.items()
        }
        emit = Emitter(_insertion_point(m.root), values.get("op", m.root))
        new = rule.action(emit, **values)
        m.root.replace_all_uses_with(new)
        copy_debug_handle(m.root, new)
        replaced[m.root] = new
        for node in reversed(m.nodes):
            graph.erase_node(node)
        return True

    return run(graph, rules, replace)


def apply(graph: Graph, rule: Rule) -> bool:
    """:func:`rewrite` with one row."""
    return rewrite(graph, (rule,))
