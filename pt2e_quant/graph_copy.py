"""Working copies of a GraphModule, so a failed prepare or convert leaves the user's model as it was.

The copy owns a fresh graph (nodes, names and metadata dicts) and fresh higher-order-op bodies,
but shares parameter and buffer tensors with the original: passes never write into existing
tensors (BatchNorm folding registers new ones), so sharing is safe and keeps the copy cheap.
"""

from __future__ import annotations

import copy

from torch.fx import Graph, GraphModule

from pt2e_quant.subgraphs import subgraph_args

__all__ = ["copy_graph_module"]


def copy_graph_module(gm: GraphModule) -> GraphModule:
    """A GraphModule with its own graph (recursively for sub-graphs) and shared tensors."""
    new = GraphModule(gm, _copy_graph(gm.graph))
    new.meta.update(getattr(gm, "meta", {}))
    for node in new.graph.nodes:
        for attr_name, body in subgraph_args(new, node):
            _set_submodule(new, attr_name, copy_graph_module(body))
    for name in ("_in_spec", "_out_spec"):
        if hasattr(gm, name) and not hasattr(new, name):
            setattr(new, name, getattr(gm, name))
    new.recompile()
    return new


def _copy_graph(graph: Graph) -> Graph:
    """Copy nodes (names, args, a shallow copy of each meta dict) but share the codegen.

    ``copy.deepcopy(graph)`` would also deep-copy the pytree codegen, which we never modify and
    whose deep copy trips a torch deprecation warning.
    """
    new = Graph(tracer_cls=graph._tracer_cls)
    output_value, old_output = new.graph_copy(graph, val_map={}, return_output_node=True)
    new_output = new.output(output_value, type_expr=getattr(old_output, "type", None))
    new_output.meta = copy.copy(old_output.meta)
    new._codegen = graph._codegen
    return new


def _set_submodule(root: GraphModule, dotted: str, module: GraphModule) -> None:
    parent_path, _, leaf = dotted.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, module)
