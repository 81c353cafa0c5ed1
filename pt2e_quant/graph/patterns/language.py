"""The pattern language: :class:`Op` trees with :class:`Var`, :data:`ANY` and :class:`Either`,
and :class:`Rule` rows of (pattern, action). Matching is :mod:`.matcher`'s, running rows is
:mod:`.driver`'s; the package docstring shows a worked example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import torch
from torch.fx import Node

__all__ = [
    "ANY",
    "ANY_USERS",
    "INSIDE",
    "Either",
    "Op",
    "Pattern",
    "Rule",
    "Step",
    "Users",
    "Var",
    "chain",
    "op",
    "then",
    "then_either_operand",
]

Target = Any  # an OpOverload, an OpOverloadPacket or a Python callable such as operator.getitem
#: one target, or a tuple / frozenset of them (an op family)
Targets = Any

#: ``Op.users``: every user of the node is inside the match (torch.fx's rule; the default)
INSIDE = "inside"
#: ``Op.users``: the node may have users outside the match (a batch norm's running statistics)
ANY_USERS = "any"
#: ``INSIDE``, ``ANY_USERS``, or the exact number of users (1: the sole user is the next op)
Users = Literal["inside", "any"] | int


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
    """A call of ``target`` (one target, or a tuple / frozenset of them) on ``args`` / ``kwargs``.

    ``name`` binds the matched node itself. ``args`` ending in ``...`` match any further
    positional arguments and any keywords (``Op(RELU_OPS, (x, ...))``). ``users`` constrains
    the matched node's users unless it is the match's root: ``INSIDE`` (torch.fx's rule: none
    outside the match), ``ANY_USERS``, or an exact count. ``check(node)`` must also hold. Ops
    are compared by identity, so one Op object used twice in a pattern must match one node
    (a shared ``choose_qparams``).
    """

    target: Targets
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    users: Users = INSIDE
    check: Callable[[Node], bool] | None = None

    @cached_property
    def targets(self) -> frozenset[Target]:
        """The graph targets this op matches: every overload of a packet."""
        targets = self.target if isinstance(self.target, (tuple, frozenset)) else (self.target,)
        expanded: set[Target] = set()
        for target in targets:
            if isinstance(target, torch._ops.OpOverloadPacket):
                expanded.update(getattr(target, name) for name in target.overloads())
            else:
                expanded.add(target)
        return frozenset(expanded)

    @cached_property
    def open(self) -> bool:
        """Whether ``args`` end in ``...``: further arguments and keywords are not compared."""
        return bool(self.args) and self.args[-1] is Ellipsis

    @cached_property
    def any_arguments(self) -> bool:
        """Whether the arguments are not compared at all (``args`` is ``(...,)``)."""
        return self.args == (...,) and not self.kwargs

    @cached_property
    def bare(self) -> bool:
        """Whether a node of one of :attr:`targets` matches this op by itself: its arguments
        are not compared and nothing else is checked."""
        return self.any_arguments and self.check is None

    @property
    def normalizes(self) -> bool:
        """Whether differing argument lists are compared after filling in schema defaults."""
        targets = self.target if isinstance(self.target, (tuple, frozenset)) else (self.target,)
        return isinstance(next(iter(targets)), torch._ops.OpOverload)


def op(
    target: Targets,
    *args: Any,
    name: str | None = None,
    users: Users = INSIDE,
    check: Callable[[Node], bool] | None = None,
    **kwargs: Any,
) -> Op:
    """``Op(target, args, kwargs, name, users, check)`` written like a call."""
    return Op(target, args, kwargs, name, users, check)


@dataclass(frozen=True, eq=False, init=False)
class Either:
    """The first of ``alternatives`` that matches."""

    alternatives: tuple[Any, ...]

    def __init__(self, *alternatives: Any) -> None:
        object.__setattr__(self, "alternatives", alternatives)


Pattern = Op | Either


@dataclass(frozen=True)
class Rule:
    """One row: a match of ``pattern`` for which ``where(**bindings)`` holds goes to ``action``.

    What the action receives is the driver's caller's business (the reference rewrite calls
    ``action(emit, **bindings)``, a backend its annotator). Matches start at the root, or at
    the op named ``anchor`` (a conv followed by its relu is found from the conv, as a
    backend's table reads it), in graph order of that node.
    """

    name: str
    pattern: Pattern
    action: Callable[..., Any]
    where: Callable[..., bool] | None = None
    anchor: str | None = None

    @cached_property
    def start(self) -> tuple[Op, ...]:
        """The ops a match starts from: the anchor, else each alternative root."""
        if self.anchor is None:
            return tuple(_roots(self.pattern))
        found = list(dict.fromkeys(o for o in _ops(self.pattern) if o.name == self.anchor))
        if len(found) != 1:
            raise ValueError(
                f"Rule {self.name!r}: anchor {self.anchor!r} must name exactly one Op of the "
                f"pattern, found {len(found)}"
            )
        return (found[0],)

    @cached_property
    def targets(self) -> frozenset[Target]:
        """The targets a match starts on (the anchor's, else the root's)."""
        return frozenset().union(*(o.targets for o in self.start))

    @cached_property
    def confined(self) -> bool:
        """Whether some op below a root must have all its users inside the match."""
        roots = set(_roots(self.pattern))
        return any(o.users == INSIDE for o in _ops(self.pattern) if o not in roots)

    @cached_property
    def paths(self) -> tuple[tuple[Op, ...], ...]:
        """Each way up from the start op to a root, start first: ``(conv, batch_norm, relu)``."""
        if self.anchor is None:
            return tuple((root,) for root in self.start)
        paths = [tuple(reversed(p)) for p in _paths_down(self.pattern, self.start[0])]
        return tuple(dict.fromkeys(paths))


def _roots(pattern: Pattern) -> Iterator[Op]:
    if isinstance(pattern, Either):
        for alternative in pattern.alternatives:
            yield from _roots(alternative)
    else:
        yield pattern


def _children(pattern: Any) -> Iterator[Any]:
    if isinstance(pattern, Either):
        yield from pattern.alternatives
    elif isinstance(pattern, Op):
        yield from pattern.args
        yield from pattern.kwargs.values()
    elif isinstance(pattern, (list, tuple)):
        yield from pattern


def _ops(pattern: Any) -> Iterator[Op]:
    if isinstance(pattern, Op):
        yield pattern
    for child in _children(pattern):
        yield from _ops(child)


def _paths_down(pattern: Any, goal: Op) -> list[list[Op]]:
    """The chains of Ops from a root of ``pattern`` down to ``goal``, root first."""
    if pattern is goal:
        return [[goal]]
    below = [path for child in _children(pattern) for path in _paths_down(child, goal)]
    return [[pattern, *path] for path in below] if isinstance(pattern, Op) else below


# ------------------------------------------------------------------------------------------
# chains: an anchor and the ops fused after it, the shape of the backends' rows
# ------------------------------------------------------------------------------------------

#: ``step(previous, users) -> pattern``: the next link of a chain reading ``previous``;
#: ``users`` is what the link's last op must allow (1 when another link follows)
Step = Callable[[Pattern, Users], Pattern]


def then(targets: Targets, name: str | None = None) -> Step:
    """A link whose op reads the previous one as its first argument: ``relu(prev)``."""

    def link(previous: Pattern, users: Users) -> Pattern:
        return Op(targets, (previous, ...), name=name, users=users)

    return link


def then_either_operand(targets: Targets, name: str | None = None) -> Step:
    """A link whose op reads the previous one as its first or second argument:
    ``add(prev, y)``, else ``add(y, prev)``."""

    def link(previous: Pattern, users: Users) -> Pattern:
        return Either(
            Op(targets, (previous, ANY, ...), name=name, users=users),
            Op(targets, (ANY, previous, ...), name=name, users=users),
        )

    return link


def chain(anchor: Targets, *steps: Step, name: str = "anchor") -> Pattern:
    """``anchor -> step -> step ...``: each op the sole user of the one before it.

    The anchor, named ``name``, takes any arguments; a :class:`Rule` with ``anchor=name``
    finds the chain from it. ``chain(CONV_OPS, then(RELU_OPS))`` is
    ``Op(RELU_OPS, (Op(CONV_OPS, (...,), name="anchor", users=1), ...))``.
    """
    pattern: Pattern = Op(anchor, (...,), name=name, users=1 if steps else INSIDE)
    for i, step in enumerate(steps):
        pattern = step(pattern, 1 if i < len(steps) - 1 else INSIDE)
    return pattern
