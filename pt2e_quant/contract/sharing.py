"""Sharing groups: which edges and node outputs must use one observer instance.

Two things make tensors share qparams:

* explicit sharing: a :class:`SharedQuantizationSpec` names the edge or node to share with;
* implicit sharing: an input edge ``(producer, consumer)`` whose spec equals the spec of the
  producer's output (or of another annotated use of the producer) observes the same tensor
  with the same settings, so one observer serves both. A consumer annotated with
  ``allow_implicit_sharing=False`` opts its input edges out.

Groups are the connected components of these relations, computed by union-find over the whole
graph *before* any observer is built, so the order of nodes in the graph does not matter: a
spec may point at an edge that comes later. Worked example (``cat1`` anchored on its first
input, ``cat2`` on its second)::

    conv1 -> cat1 -> cat2          specs: (conv1, cat1)=ACT   (conv2, cat1)=Shared((conv1,cat1))
    conv2 ---^      ^               cat1=Shared((conv1,cat1))  (cat1, cat2)=Shared((z,cat2))
    z --------------+               (z, cat2)=ACT  cat2=Shared((z,cat2))  conv1=conv2=ACT

    explicit unions join each cat's inputs and output; implicit sharing joins conv1 with
    (conv1, cat1), conv2 with (conv2, cat1) and cat1 with (cat1, cat2): one group of all nine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.contract.specs import (
    EdgeOrNode,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from pt2e_quant.errors import AnnotationError, describe_node, graph_context

__all__ = ["SharingGroup", "SharingPlan", "plan_sharing", "describe_edge_or_node"]

#: spec attributes that must agree for two specs to observe a tensor the same way
_IMPLICIT_SHARING_ATTRS = (
    "dtype",
    "is_dynamic",
    "quant_min",
    "quant_max",
    "qscheme",
    "ch_axis",
    "scale",
    "zero_point",
)


def describe_edge_or_node(edge_or_node: EdgeOrNode) -> str:
    """Human-readable name: ``output of 'conv2d'`` or ``edge 'x' -> 'conv2d'``."""
    if isinstance(edge_or_node, Node):
        return f"output of '{edge_or_node.name}'"
    producer, consumer = edge_or_node
    return f"edge '{producer.name}' -> '{consumer.name}'"


def _anchor_node(edge_or_node: EdgeOrNode) -> Node:
    return edge_or_node if isinstance(edge_or_node, Node) else edge_or_node[1]


@dataclass
class SharingGroup:
    """Members (graph order) that share one observer, and the spec that observer comes from."""

    members: list[EdgeOrNode]
    spec: QuantizationSpecBase


@dataclass
class SharingPlan:
    """Result of :func:`plan_sharing`: the annotated specs and the groups they form."""

    specs: dict[EdgeOrNode, QuantizationSpecBase]
    groups: list[SharingGroup]
    group_of: dict[EdgeOrNode, SharingGroup] = field(default_factory=dict)


class _UnionFind:
    def __init__(self, items: Iterable[EdgeOrNode]) -> None:
        self.parent: dict[EdgeOrNode, EdgeOrNode] = {item: item for item in items}

    def find(self, item: EdgeOrNode) -> EdgeOrNode:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: EdgeOrNode, b: EdgeOrNode) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[root_b] = root_a


def collect_specs(gm: GraphModule) -> dict[EdgeOrNode, QuantizationSpecBase]:
    """Every annotated edge and output with a non-None spec, in graph order."""
    specs: dict[EdgeOrNode, QuantizationSpecBase] = {}
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None:
            continue
        for input_node, spec in annotation.input_qspec_map.items():
            if spec is not None:
                specs[(input_node, node)] = spec
        if annotation.output_qspec is not None:
            specs[node] = annotation.output_qspec
    return specs


def _check_shared_target(
    member: EdgeOrNode, target: EdgeOrNode, specs: dict[EdgeOrNode, QuantizationSpecBase]
) -> None:
    if target in specs:
        return
    node = _anchor_node(member)
    raise AnnotationError(
        f"The SharedQuantizationSpec on the {describe_edge_or_node(member)} points at the "
        f"{describe_edge_or_node(target)}, which no annotation quantizes. Annotate that "
        "edge/output with a spec, or point the shared spec at an edge or output that has one.\n"
        + graph_context(node)
    )


def _resolve(
    member: EdgeOrNode, specs: dict[EdgeOrNode, QuantizationSpecBase]
) -> QuantizationSpecBase:
    """Follow SharedQuantizationSpec references to the concrete spec they end at."""
    seen = [member]
    spec = specs[member]
    while isinstance(spec, SharedQuantizationSpec):
        target = spec.edge_or_node
        _check_shared_target(seen[-1], target, specs)
        if target in seen:
            cycle = " -> ".join(describe_edge_or_node(m) for m in seen + [target])
            raise AnnotationError(
                f"SharedQuantizationSpecs form a cycle with no concrete spec: {cycle}. "
                "Give one of them a QuantizationSpec."
            )
        seen.append(target)
        spec = specs[target]
    return spec


def _observe_alike(a: QuantizationSpecBase, b: QuantizationSpecBase) -> bool:
    missing = object()
    return all(
        getattr(a, attr, missing) == getattr(b, attr, missing) for attr in _IMPLICIT_SHARING_ATTRS
    )


def _allows_implicit_sharing(node: Node) -> bool:
    annotation = get_annotation(node)
    return annotation is None or annotation.allow_implicit_sharing


def _join_implicitly_shared(
    uf: _UnionFind,
    specs: dict[EdgeOrNode, QuantizationSpecBase],
    resolved: dict[EdgeOrNode, QuantizationSpecBase],
) -> None:
    """Join input edges with the producer's output and sibling edges that observe alike."""
    for member in specs:
        if isinstance(member, Node):
            continue
        producer, consumer = member
        if not _allows_implicit_sharing(consumer):
            continue
        for user in producer.users:
            sibling = (producer, user)
            if user is consumer or sibling not in specs or not _allows_implicit_sharing(user):
                continue
            if _observe_alike(resolved[member], resolved[sibling]):
                uf.union(sibling, member)
        if producer in specs and _observe_alike(resolved[member], resolved[producer]):
            uf.union(producer, member)


def _group_spec(
    members: list[EdgeOrNode],
    specs: dict[EdgeOrNode, QuantizationSpecBase],
) -> QuantizationSpecBase:
    """The concrete spec of the first member (graph order) that has one.

    Every union joins members whose resolved specs agree on ``_IMPLICIT_SHARING_ATTRS``
    (an explicit reference resolves to its target's spec; implicit sharing requires
    :func:`_observe_alike`), so the members of a group can differ only in observer settings
    those attributes leave out (the observer class, its averaging constant, ...); the first
    concrete spec in graph order decides those.
    """
    # never empty: every reference chain ends at a concrete member it was joined with
    return next(specs[m] for m in members if not isinstance(specs[m], SharedQuantizationSpec))


def plan_sharing(gm: GraphModule) -> SharingPlan:
    """Group every annotated edge/output of ``gm`` by the observer instance it must use."""
    specs = collect_specs(gm)
    resolved = {member: _resolve(member, specs) for member in specs}
    uf = _UnionFind(specs)
    for member, spec in specs.items():
        if isinstance(spec, SharedQuantizationSpec):
            uf.union(spec.edge_or_node, member)
    _join_implicitly_shared(uf, specs, resolved)

    members_by_root: dict[EdgeOrNode, list[EdgeOrNode]] = {}
    for member in specs:
        members_by_root.setdefault(uf.find(member), []).append(member)
    plan = SharingPlan(specs=specs, groups=[])
    for members in members_by_root.values():
        group = SharingGroup(members=members, spec=_group_spec(members, specs))
        plan.groups.append(group)
        for member in members:
            plan.group_of[member] = group
    return plan


def node_label(edge_or_node: EdgeOrNode) -> str:
    """Short label used in warnings that list several edges."""
    return describe_node(_anchor_node(edge_or_node))
