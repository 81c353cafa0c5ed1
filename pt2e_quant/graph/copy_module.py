"""Working copies of a GraphModule, so a failed prepare or convert leaves the user's model as it was.

The copy owns a fresh graph (nodes, names and metadata dicts), fresh higher-order-op bodies and
fresh attribute containers (the plain ``nn.Module`` objects export nests parameters in), but
shares parameter and buffer tensors and every other module (observers, ``_guards_fn``, user
modules) with the original. Passes never write into existing tensors (BatchNorm folding
registers new ones) and only add, replace or delete attributes on containers, which the copy
owns, so sharing is safe.

The copy is structural, not ``GraphModule(gm, graph)``: that constructor rebuilds the module
tree attribute by attribute through ``nn.Module.__setattr__`` and was most of prepare's time on
large models. A structural copy also keeps what the constructor drops (``range_constraints``,
``validate_inputs``, the pytree specs, ``meta``).
"""

from __future__ import annotations

import collections
import copy
import types

import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_arg

from pt2e_quant.contract.annotation import ANNOTATION_KEY

__all__ = ["copy_graph_module", "is_owned_container"]


def copy_graph_module(gm: GraphModule, *, recompile: bool = True) -> GraphModule:
    """A GraphModule with its own graph (recursively for sub-graphs) and shared tensors.

    With ``recompile=False`` the copy (and its bodies) reuses the original's generated
    ``forward``, which is exact for the unchanged copy; pipelines that rewrite the copy anyway
    regenerate code once after their passes (``passes.driver.finalize_graphs``) instead of
    twice.
    """
    return _copy_graph_module(gm, recompile)


def is_owned_container(module: object) -> bool:
    """Whether a copy owns ``module`` (so passes may edit it): graph modules and the plain
    ``nn.Module`` containers export nests tensors in. Every other module is shared."""
    return type(module) is torch.nn.Module or isinstance(module, GraphModule)


def _copy_graph_module(gm: GraphModule, recompile: bool) -> GraphModule:
    # GraphModule.__new__ makes a fresh per-instance class, so recompiling the copy installs
    # its forward on that class and never on the original's.
    new = GraphModule.__new__(type(gm))
    _copy_module_state(gm, new, recompile)
    new.meta = dict(getattr(gm, "meta", {}))
    for name in ("_replace_hooks", "_create_node_hooks", "_erase_node_hooks", "_deepcopy_hooks"):
        if isinstance(getattr(gm, name, None), list):
            setattr(new, name, list(getattr(gm, name)))
    graph = _copy_graph(gm.graph)
    if recompile:
        new.graph = graph  # the setter binds the graph and generates forward
    else:
        new._graph = graph
        graph.owning_module = new
        # Same nodes, same names: the original's code is this graph's code. It reads every
        # attribute through ``self``, so it runs against the copy's own attributes.
        type(new).forward = type(gm).forward
    return new


def _copy_container(module: torch.nn.Module, recompile: bool) -> torch.nn.Module:
    new = torch.nn.Module.__new__(type(module))
    _copy_module_state(module, new, recompile)
    return new


def _copy_submodule(module: torch.nn.Module, recompile: bool) -> torch.nn.Module:
    if isinstance(module, GraphModule):
        return _copy_graph_module(module, recompile)
    if is_owned_container(module):
        return _copy_container(module, recompile)
    return module  # an op's module (observer, guards): shared, as FX copies share them


def _copy_module_state(source: torch.nn.Module, target: torch.nn.Module, recompile: bool) -> None:
    """Give ``target`` its own copies of ``source``'s attribute dictionaries and children."""
    state = dict(source.__dict__)
    for name, value in state.items():
        if isinstance(value, (dict, set)) and name.startswith("_"):
            # dict / OrderedDict / set copy themselves in C; copy.copy goes through
            # __reduce_ex__, several times slower, and a module holds about twenty of these.
            state[name] = value.copy() if type(value) in _SELF_COPYING else copy.copy(value)
        elif isinstance(value, types.MethodType) and value.__self__ is source:
            # e.g. the train / eval overrides torch.export installs: bind them to the copy
            state[name] = types.MethodType(value.__func__, target)
    state["_modules"] = {
        name: None if child is None else _copy_submodule(child, recompile)
        for name, child in source._modules.items()
    }
    target.__dict__.update(state)


_SELF_COPYING = (dict, collections.OrderedDict, set)


def _copy_graph(graph: Graph) -> Graph:
    """Copy nodes (names, args, a shallow copy of each meta dict) but share the codegen.

    ``copy.deepcopy(graph)`` would also deep-copy the pytree codegen, which we never modify and
    whose deep copy trips a torch deprecation warning.
    """
    new = Graph(tracer_cls=graph._tracer_cls)
    val_map: dict[Node, Node] = {}
    if _can_append_nodes(new):
        old_output = _append_copies(graph, new, val_map)
        output_value = map_arg(old_output.args[0], val_map.__getitem__)
    else:
        output_value, old_output = new.graph_copy(graph, val_map=val_map, return_output_node=True)
    new_output = new.output(output_value, type_expr=getattr(old_output, "type", None))
    new_output.meta = copy.copy(old_output.meta)
    new._codegen = graph._codegen
    for node in new.nodes:
        _rekey_annotation(node, val_map)
    return new


def _can_append_nodes(graph: Graph) -> bool:
    """Whether ``graph`` has the internals :func:`_append_copies` fills in (torch 2.13 does)."""
    return (
        hasattr(graph, "_insert")
        and hasattr(graph, "_find_nodes_lookup_table")
        and hasattr(graph, "_len")
        and hasattr(getattr(graph, "_graph_namespace", None), "associate_name_with_obj")
    )


def _append_copies(graph: Graph, new: Graph, val_map: dict[Node, Node]) -> Node:
    """Copy every node before ``graph``'s output into the empty ``new``; returns the output node.

    This is ``Graph.graph_copy`` without ``create_node``'s scan of every argument tree for raw
    SymInts, which a node of an existing graph has already passed: the scan is 40% of a copy,
    and prepare and convert each copy the whole model. Names, targets, arguments, types and
    a shallow copy of each meta dict are carried over exactly as ``graph_copy`` does.
    """
    namespace = new._graph_namespace
    for node in graph.nodes:
        if node.op == "output":
            return node
        name = namespace.create_name(node.name, None)
        copied = Node(
            new,
            name,
            node.op,
            node.target,
            map_arg(node.args, val_map.__getitem__),
            map_arg(node.kwargs, val_map.__getitem__),
            node.type,
        )
        namespace.associate_name_with_obj(name, copied)
        new._insert(copied)
        new._find_nodes_lookup_table.insert(copied)
        new._len += 1
        copied.meta = copy.copy(node.meta)
        val_map[node] = copied
    raise ValueError("the graph to copy has no output node")


def _rekey_annotation(node: Node, val_map: dict[Node, Node]) -> None:
    """Point a copied annotation's input map at the copy's nodes, not the original's.

    The meta dict is copied shallowly, so without this the copy's annotation would still be
    keyed by (and, being shared, would let passes edit) the original graph's nodes.
    """
    annotation = node.meta.get(ANNOTATION_KEY)
    input_map = getattr(annotation, "input_qspec_map", None)
    if not isinstance(input_map, dict):
        return
    annotation = copy.copy(annotation)
    annotation.input_qspec_map = {val_map.get(k, k): spec for k, spec in input_map.items()}
    node.meta[ANNOTATION_KEY] = annotation
