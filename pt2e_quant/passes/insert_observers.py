"""Insert observer / fake-quant modules where the annotations asked for them.

Before (conv annotated: input, weight and output quantized)::

    conv2d = aten.conv2d.default(x, w, b);  relu = aten.relu.default(conv2d)

After::

    activation_post_process_1 = self.activation_post_process_1(x)
    activation_post_process_0 = self.activation_post_process_0(w)
    conv2d = aten.conv2d.default(activation_post_process_1, activation_post_process_0, b)
    activation_post_process_2 = self.activation_post_process_2(conv2d)
    relu = aten.relu.default(activation_post_process_2)

Each observer call is a ``call_module`` node right after the tensor it observes. An input edge
whose observer is the producer's output observer (same sharing group) reuses that node; an
observer instance already attached to the same tensor for another consumer is reused too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.annotation import get_annotation
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.node_meta import copy_debug_handle
from pt2e_quant.specs import EdgeOrNode

__all__ = ["insert_observers", "OBSERVER_PREFIX"]

OBSERVER_PREFIX = "activation_post_process_"


class _Inserter:
    def __init__(self, gm: GraphModule, observers: dict[EdgeOrNode, torch.nn.Module]) -> None:
        self.gm = gm
        self.observers = observers
        self.next_index = 0
        self.buffer_names = {name for name, _ in gm.named_buffers(remove_duplicate=False)}

    def is_observer_node(self, node: Any) -> bool:
        if not isinstance(node, Node) or node.op != "call_module":
            return False
        return is_observer_or_fake_quant(self.gm.get_submodule(str(node.target)))

    def insert_after(self, node: Node, observer: torch.nn.Module) -> Node:
        while hasattr(self.gm, f"{OBSERVER_PREFIX}{self.next_index}"):
            self.next_index += 1
        name = f"{OBSERVER_PREFIX}{self.next_index}"
        self.next_index += 1
        self.gm.add_module(name, observer)
        _label(observer, node.name)
        with self.gm.graph.inserting_after(node):
            return self.gm.graph.call_module(name, (node,))

    def observe_input(self, consumer: Node, arg: Any) -> Any:
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.observe_input(consumer, a) for a in arg)
        if not isinstance(arg, Node):
            return arg
        producer = arg
        while self.is_observer_node(producer):
            producer = producer.args[0]
        observer = self.observers.get((producer, consumer))
        if observer is None or _writes_into_buffer(consumer, producer, self.buffer_names):
            return arg
        if self.observers.get(producer) is observer:
            return arg  # already reads the producer's output observer
        for user in arg.users:
            if self.is_observer_node(user) and self.gm.get_submodule(str(user.target)) is observer:
                return user
        return self.insert_after(arg, observer)

    def observe_output(self, node: Node) -> None:
        observer = self.observers.get(node)
        if observer is None or not isinstance(node.meta.get("val"), torch.Tensor):
            return
        observer_node = self.insert_after(node, observer)
        copy_debug_handle(node, observer_node)
        for user in list(node.users):
            if user is not observer_node and not _is_guard_check(self.gm, user):
                user.replace_input_with(node, observer_node)


def _label(observer: torch.nn.Module, node_name: str) -> None:
    """Tell our observers (and a fake-quant's inner one) which node they watch, for warnings;
    an observer shared by several edges keeps the first name."""
    for module in (observer, getattr(observer, "activation_post_process", None)):
        if getattr(module, "observed_node", "") is None:
            module.observed_node = node_name


def _is_guard_check(gm: GraphModule, node: Node) -> bool:
    # export's input guard check reads the raw user inputs; it must keep doing so
    return node.op == "call_module" and type(gm.get_submodule(str(node.target))).__name__ == (
        "GuardsFn"
    )


def _writes_into_buffer(consumer: Node, producer: Node, buffer_names: set[str]) -> bool:
    """An in-place op updating a module buffer (e.g. BN statistics) must receive the buffer itself."""
    schema = getattr(consumer.target, "_schema", None)
    if schema is None or not consumer.args or consumer.args[0] is not producer:
        return False
    first = schema.arguments[0] if schema.arguments else None
    if first is None or first.alias_info is None or not first.alias_info.is_write:
        return False
    return producer.op == "get_attr" and str(producer.target) in buffer_names


def insert_observers(gm: GraphModule, observers: dict[EdgeOrNode, torch.nn.Module]) -> bool:
    """Insert input and output observers of every annotated node; True if any was inserted."""
    inserter = _Inserter(gm, observers)
    count_before = len(gm.graph.nodes)
    for node in list(gm.graph.nodes):
        if get_annotation(node) is None:
            continue
        node.args = inserter.observe_input(node, node.args)
        node.kwargs = {k: inserter.observe_input(node, v) for k, v in node.kwargs.items()}
        inserter.observe_output(node)
    return len(gm.graph.nodes) != count_before
