"""Output loggers: record, per debug handle, the value a model computes for that op.

:func:`prepare_for_propagation_comparison` returns a copy of a model with an
:class:`OutputLogger` after every node that carries a debug handle; running the float copy and
the quantized copy on the same inputs and calling :func:`extract_results_from_loggers` on each
gives two ``{handle: (node_name, nn_module_stack, stats)}`` maps to compare.

Which value stands for a handle in a quantized graph? The value the model passes on to the next
op, i.e. the dequantized output::

    ours:     conv2d[h=1] -> logger -> quantize -> dequantize[h=1] -> logger   (convert copies h)
    torchao:  conv2d[h=1] -> logger -> quantize -> dequantize      -> logger[h=1]

Our convert puts the handle on the dequantize made from the op's output observer, so that node
gets a logger of its own. torchao 0.18's convert leaves the q/dq pair without a handle, so a
dequantize without handle whose quantize reads a handled op is logged under the op's handle.
Either way the later logger of a handle wins in :func:`extract_results_from_loggers`.

Control-flow bodies: nodes inside ``cond`` / ``map`` / ``scan`` / ``while_loop`` bodies are
logged too. The logger copy then calls those ops through pt2e_quant's eager stand-ins (the
same ones a prepared model uses), because the real higher-order ops trace their bodies and a
logger's side effect (appending to ``stats``) cannot be traced. A ``map`` body logger records
one entry per mapped row.
"""

from __future__ import annotations

import copy
import operator
import warnings
from typing import TypeVar

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.debug.handles import ADD_HANDLES_HINT, MissingDebugHandlesError, has_debug_handles
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.graph.subgraphs import is_higher_order_call, iter_graph_modules
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from pt2e_quant.passes.use_eager_control_flow import use_eager_control_flow

T = TypeVar("T")

__all__ = [
    "OutputLogger",
    "prepare_for_propagation_comparison",
    "extract_results_from_loggers",
    "shared_handle_piece",
]

#: handle -> (node name, nn_module_stack, recorded values in call order)
LoggerResults = dict[int, tuple[str, object, list[object]]]


def _detached_copy(value: object) -> object:
    """A copy that later in-place ops of the model (``relu_`` in torchao graphs) cannot change."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detached_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached_copy(v) for k, v in value.items()}
    return value


class OutputLogger(torch.nn.Module):
    """Records a detached copy of every value passed through it and returns the value unchanged.

    ``_is_impure`` tells ``Graph.eliminate_dead_code`` to keep the logger even when a later
    pass finds its result unused.
    """

    _is_impure = True

    def __init__(self, debug_handle: int, node_name: str, nn_module_stack: object = None) -> None:
        super().__init__()
        self.debug_handle = debug_handle
        self.node_name = node_name
        self.nn_module_stack = nn_module_stack
        self.stats: list[object] = []

    def forward(self, x: object) -> object:
        self.stats.append(_detached_copy(x))
        return x

    def extra_repr(self) -> str:
        return (
            f"debug_handle={self.debug_handle}, node_name={self.node_name!r}, "
            f"num_stats={len(self.stats)}"
        )


def _handle_passed_on_by_dequantize(node: Node) -> int | None:
    """The handle of ``op`` for a handle-less ``op -> quantize -> dequantize`` (torchao's convert)."""
    if not is_dequantize(node) or get_debug_handle(node) is not None:
        return None
    quantize = node.args[0]
    if not is_quantize(quantize) or get_debug_handle(quantize) is not None:
        return None
    source = quantize.args[0]
    if not isinstance(source, Node) or is_quantize(source) or is_dequantize(source):
        return None
    return get_debug_handle(source)


def _logged_handle(node: Node) -> int | None:
    """The handle to log ``node``'s output under; None for nodes that are not logged.

    ``get_attr`` nodes carry handles inside control-flow bodies but only name constants or
    body graphs, which have nothing to compare.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return None
    handle = get_debug_handle(node)
    if handle is None:
        handle = _handle_passed_on_by_dequantize(node)
    if handle is not None and _is_piece_of(node, handle):
        return None
    return handle


def _is_piece_of(node: Node, handle: int) -> bool:
    """The dequantize of a :func:`shared_handle_piece`'s quantized output, or the piece itself:
    the op's logger already holds the whole value, and a second logger would record one
    piece under the same handle."""
    while (is_dequantize(node) or is_quantize(node)) and isinstance(node.args[0], Node):
        node = node.args[0]
    return get_debug_handle(node) == handle and shared_handle_piece(node) is not None


def shared_handle_piece(node: Node) -> int | None:
    """``i`` for ``getitem(op, i)`` carrying ``op``'s own handle, else None.

    Re-export copies a multi-output op's metadata (its handle included) onto the getitems it
    creates, so after it ``split``, ``getitem(split, 0)`` and ``getitem(split, 1)`` share one
    handle; the value logged for it is the op's whole output.
    """
    if node.target is not operator.getitem or len(node.args) < 2:
        return None
    source, index = node.args[0], node.args[1]
    if not isinstance(source, Node) or not isinstance(index, int):
        return None
    handle = get_debug_handle(node)
    return index if handle is not None and get_debug_handle(source) == handle else None


def _free_attribute_name(gm: GraphModule, prefix: str) -> str:
    name, suffix = prefix, 0
    while hasattr(gm, name):
        suffix += 1
        name = f"{prefix}_{suffix}"
    return name


def _insert_logger(gm: GraphModule, node: Node, handle: int) -> Node:
    """``node -> users`` becomes ``node -> logger -> users``."""
    name = _free_attribute_name(gm, f"{node.name}_logger")
    gm.add_submodule(name, OutputLogger(handle, node.name, node.meta.get("nn_module_stack")))
    with gm.graph.inserting_after(node):
        logger = gm.graph.call_module(name, (node,))
    node.replace_all_uses_with(logger, delete_user_cb=lambda user: user is not logger)
    return logger


def _add_loggers(gm: GraphModule) -> int:
    """Insert a logger after every logged node of ``gm`` (not of its bodies); return how many."""
    # decide first: a logger inserted after an op would hide the op from its quantize
    logged = [(node, _logged_handle(node)) for node in gm.graph.nodes]
    logged = [(node, handle) for node, handle in logged if handle is not None]
    for node, handle in logged:
        _insert_logger(gm, node, handle)
    return len(logged)


def deep_copy(model: T) -> T:
    """``copy.deepcopy`` without torch 2.13's pytree ``LeafSpec`` deprecation warning.

    Deep-copying an exported module re-creates its input/output tree specs through a code path
    torch itself deprecated; the warning is about torch internals, not about the user's model,
    so it is silenced here instead of reaching every debugger user.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return copy.deepcopy(model)


def prepare_for_propagation_comparison(model: GraphModule) -> GraphModule:
    """A deep copy of ``model`` with an :class:`OutputLogger` after every handled node.

    The original is untouched, and the copy computes exactly what the original computes
    (loggers return their input). Nodes without a handle (weights, ``_guards_fn``, input
    quantization) are not logged. See the module docstring for which node stands for a handle
    in a quantized graph. A model with no handle at all raises
    :class:`~pt2e_quant.debug.handles.MissingDebugHandlesError` rather than comparing nothing.
    """
    if not isinstance(model, GraphModule):
        hint = " (pass ep.module())" if isinstance(model, torch.export.ExportedProgram) else ""
        raise TypeError(
            "prepare_for_propagation_comparison expects the GraphModule of an exported "
            f"program or a prepared / converted model, got {type(model).__name__}{hint}"
        )
    if not has_debug_handles(model):
        raise MissingDebugHandlesError(
            "prepare_for_propagation_comparison: the model carries no numeric debug handles, "
            f"so no logger would be placed and nothing compared. {ADD_HANDLES_HINT}. "
            "(torchao 0.18 matches nodes by provenance instead; pt2e_quant matches by handle.)"
        )
    model = deep_copy(model)
    graph_modules = list(iter_graph_modules(model))
    bodies_logged = sum(_add_loggers(gm) for gm in graph_modules[1:]) > 0
    _add_loggers(model)
    for gm in graph_modules:
        if bodies_logged and any(is_higher_order_call(n) for n in gm.graph.nodes):
            use_eager_control_flow(gm)
        gm.recompile()
    return model


def extract_results_from_loggers(model: GraphModule) -> LoggerResults:
    """``{handle: (node_name, nn_module_stack, stats)}`` from the loggers that recorded a value.

    Loggers are read in module order (body loggers, then top-level ones in graph order); when
    two share a handle the later one wins, i.e. the dequantize's logger over its op's.
    """
    results: LoggerResults = {}
    for module in model.modules():
        if isinstance(module, OutputLogger) and module.stats:
            results[module.debug_handle] = (
                module.node_name,
                module.nn_module_stack,
                module.stats,
            )
    return results
