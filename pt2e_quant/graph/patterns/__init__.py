"""The one pattern language: rows of (pattern, action), one matcher, one driver.

The backends' rule tables (``quantizers/xnnpack/rules.py``, ``quantizers/x86_inductor/
rules.py``) and the reference rewrite (``passes/rewrite_to_reference.py``) are all written in
it, as tinygrad writes its rewrites: a table of :class:`Rule` rows run by :func:`run`.

* **Patterns** (:mod:`.language`): a tree of :class:`Op` nodes, each a call of one target or a
  family of them, whose leaves are :class:`Var` placeholders, the wildcard :data:`ANY` or
  literals; :class:`Either` tries alternatives. ``args`` ending in ``...`` leave the rest of a
  call unchecked; ``users`` and ``check`` constrain a matched node beyond its arguments.
  :func:`chain` / :func:`then` spell the backends' shape, an anchor op followed by the ops
  fused after it, each the sole user of the one before.
* **Matching** (:mod:`.matcher`): torch.fx's ``SubgraphMatcher`` rules, from a row's root or
  from the op its ``anchor`` names.
* **Driving** (:mod:`.driver`): :func:`run` takes the rows in order, finds all of a row's
  matches, then hands each to the caller's ``act``; :func:`rewrite` is ``run`` with an act
  that replaces the match by what the row's action emits.

A worked example. In the graph ::

    conv = aten.conv2d(x, w, b)
    relu = aten.relu(conv)
    q    = quantized_decomposed.quantize_per_tensor(relu, 0.1, 0, -128, 127, torch.int8)

a backend row anchored at the conv ::

    Rule("conv_relu", chain(CONV_OPS, then(RELU_OPS)), annotate_conv, anchor="anchor")

has the pattern ``Op(RELU_OPS, (Op(CONV_OPS, (...,), name="anchor", users=1), ...))``. The
matcher starts at each conv in graph order, climbs to its users that are a relu (the conv must
have exactly one), and matches the pattern down from that relu with the anchor held to the
conv: ``Match(root=relu, nodes=(conv, relu), values={"anchor": conv})``, which the backend's
``act`` annotates unless a row before it claimed one of those nodes. A rewrite row is written
from its output, as torchao writes its pattern graphs ::

    Rule("quantize", op(Q, Var("x"), Var("scale"), ANY, ANY, ANY, ANY, name="q"), emit_quantize)

matches ``q`` with ``values={"x": relu, "scale": 0.1, "q": q}``; :func:`rewrite` calls
``emit_quantize(emit, x=relu, scale=0.1, q=q)``, which emits the replacement through ``emit``
before the first user of ``q``, and erases ``q``.
"""

from __future__ import annotations

from pt2e_quant.graph.patterns.driver import Emitter, apply, rewrite, run
from pt2e_quant.graph.patterns.language import (
    ANY,
    ANY_USERS,
    INSIDE,
    Either,
    Op,
    Pattern,
    Rule,
    Step,
    Users,
    Var,
    chain,
    op,
    then,
    then_either_operand,
)
from pt2e_quant.graph.patterns.matcher import Match, find, match
from pt2e_quant.graph.patterns.predicates import (
    any_annotated,
    is_call,
    is_float_tensor,
    next_op,
    sole_user,
)

__all__ = [
    "ANY",
    "ANY_USERS",
    "INSIDE",
    "Either",
    "Emitter",
    "Match",
    "Op",
    "Pattern",
    "Rule",
    "Step",
    "Users",
    "Var",
    "any_annotated",
    "apply",
    "chain",
    "find",
    "is_call",
    "is_float_tensor",
    "match",
    "next_op",
    "op",
    "rewrite",
    "run",
    "sole_user",
    "then",
    "then_either_operand",
]
