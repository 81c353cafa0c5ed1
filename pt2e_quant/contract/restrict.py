"""Keep the annotations of some nodes and drop the rest, without leaving dangling references.

Two callers need this: the sensitivity sweep quantizes one unit at a time (keep that unit's
nodes), and the accuracy-aware fallback keeps a few ops float (keep every node but those).
Dropping a node's annotation is not enough on its own, because the specs that remain may
point at what was dropped:

* a :class:`SharedQuantizationSpec` whose target (an edge or output) is dropped is replaced,
  for the first kept member referring to it, by the concrete spec the reference resolves to;
  later references to the same target share with that member. So a max-pool sharing a
  dropped conv's output is still quantized, with qparams observed at its own edge;
* a :class:`DerivedQuantizationSpec` whose sources are dropped (and were not taken over as
  above) is dropped too, leaving that edge float; a note says so.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import clear_annotations, get_annotation, set_annotation
from pt2e_quant.contract.sharing import collect_specs
from pt2e_quant.contract.specs import (
    DerivedQuantizationSpec,
    EdgeOrNode,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)

__all__ = ["restrict_annotations"]


def _anchor(member: EdgeOrNode) -> Node:
    return member if isinstance(member, Node) else member[1]


def _label(member: EdgeOrNode) -> str:
    if isinstance(member, Node):
        return f"the output of '{member.name}'"
    return f"the edge '{member[0].name}' -> '{member[1].name}'"


def _local_spec(
    member: EdgeOrNode,
    spec: QuantizationSpecBase,
    specs: dict[EdgeOrNode, QuantizationSpecBase],
    kept: set[EdgeOrNode],
    adopted: dict[EdgeOrNode, EdgeOrNode],
) -> QuantizationSpecBase:
    """``spec`` with shared references to dropped members resolved (see the module docstring)."""
    original, visited = spec, []
    while isinstance(spec, SharedQuantizationSpec):
        target = spec.edge_or_node
        if target in kept:
            break
        if target in adopted:
            spec = SharedQuantizationSpec(adopted[target])
            break
        if target not in specs or target in visited:
            return original  # a broken reference: let prepare report it as it would anyway
        visited.append(target)
        spec = specs[target]
    adopted.update(dict.fromkeys(visited, member))
    return spec


def restrict_annotations(gm: GraphModule, keep: Collection[Node]) -> list[str]:
    """Remove every annotation of ``gm`` outside ``keep``; returns notes on dropped specs.

    Nodes of ``keep`` that carry no annotation are ignored (a body the quantizer has not
    reached yet).
    """
    keep = set(keep)
    kept_nodes = [n for n in gm.graph.nodes if n in keep and get_annotation(n) is not None]
    specs = collect_specs(gm)
    kept = {m for m in specs if _anchor(m) in keep}
    adopted: dict[EdgeOrNode, EdgeOrNode] = {}
    local = {m: _local_spec(m, specs[m], specs, kept, adopted) for m in specs if m in kept}
    notes = []
    for member, spec in local.items():
        if not isinstance(spec, DerivedQuantizationSpec):
            continue
        sources = [s if s in kept else adopted.get(s) for s in spec.derived_from]
        if any(s is None for s in sources):
            local[member] = None
            notes.append(f"derived spec of {_label(member)} left float: its sources are outside")
        else:
            local[member] = dataclasses.replace(spec, derived_from=sources)
    clear_annotations(n for n in gm.graph.nodes if n not in keep)
    for node in kept_nodes:
        annotation = copy.copy(get_annotation(node))
        annotation.input_qspec_map = {i: local.get((i, node)) for i in annotation.input_qspec_map}
        annotation.output_qspec = local.get(node)
        set_annotation(node, annotation)
    return notes
