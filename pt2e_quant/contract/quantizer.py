"""The ``Quantizer`` interface backends implement.

A quantizer looks at an exported graph and writes :class:`QuantizationAnnotation` objects on
the nodes it wants quantized; prepare turns those into observers and convert into q/dq ops.
The base class fixes the call order prepare uses:

1. ``transform_for_annotation(model)`` - optional graph rewrite before annotating,
2. ``annotate(model)`` - write annotations,
3. ``validate(model)`` - backend-specific checks (prepare also runs the generic checks of
   :mod:`pt2e_quant.contract.validation` on every quantizer, so a backend's ``validate`` only adds what
   is specific to it),
4. ``prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)`` - optional last look at
   the observers prepare built, e.g. to swap one sharing group's observer.

Coverage reports (``explain()``) ask a quantizer four more things, with defaults that fit a
quantizer that declares nothing: its name in reports (:attr:`coverage_name`), the ops its
rules anchor on (:meth:`rule_ops`), the ops it only fuses after another (:meth:`post_ops`),
the scope decision for a node (:meth:`scope_decision`), and, for a composition, its members
(:meth:`leaf_quantizers`). A quantizer written for torchao has none of these methods; the
coverage code reads each with ``getattr`` and a default that claims nothing, so its float ops
read "not annotated by <quantizer>" (:mod:`pt2e_quant.coverage.reasons`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch.fx import GraphModule, Node

from pt2e_quant.contract.specs import EdgeOrNode

__all__ = ["Quantizer"]


class Quantizer(ABC):
    """Base class of backend quantizers (same method names as torchao's)."""

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        """Rewrite the graph before annotation (e.g. decompose an op); default: unchanged."""
        return model

    @abstractmethod
    def annotate(self, model: GraphModule) -> GraphModule:
        """Write ``QuantizationAnnotation`` objects on the nodes to quantize; return the model."""

    @abstractmethod
    def validate(self, model: GraphModule) -> None:
        """Raise if the annotations break a rule of this backend (e.g. an unsupported dtype)."""

    def prepare_obs_or_fq_callback(
        self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]
    ) -> None:
        """Inspect or replace the observers prepare built, before they are inserted."""
        return None

    # -- coverage interface (explain() reads it; every method has a default) ------------------

    #: how coverage reports name this quantizer ("no rule for this op in <name>"); None: the
    #: class name
    coverage_name: str | None = None

    def rule_ops(self) -> frozenset:
        """The aten overloads a rule of this quantizer anchors on; default: none declared."""
        return frozenset()

    def post_ops(self) -> frozenset:
        """Ops this quantizer quantizes only fused after another op (never on their own)."""
        return frozenset()

    def scope_decision(self, node: Node) -> tuple[Any, str]:
        """``(decision, setter)`` for ``node``: ``decision`` is None when a scope setter leaves
        the node float, and ``setter`` names that call (``"set_module_name('head')"``); any
        other decision means the node is in scope. Default: every node is in scope."""
        return True, ""

    def leaf_quantizers(self) -> list[Quantizer]:
        """The quantizers that actually annotate: ``[self]``, or a composition's members."""
        return [self]
