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

After convert an observer becomes a quantize/dequantize pair, i.e. a copy. A reader that must
see an in-place write made between the producer and itself (through a view, or an op that
returns its input), or that is itself such a view or in-place op, therefore keeps reading the
original tensor: that edge stays float, with a warning naming it. torchao quantizes these
edges and its converted model then reads stale values.

One such edge is quantized all the same: a model input that an in-place op both reads
quantized and is the first to write (``x2.add_(conv(x))``, ``x += block(x)``). The op then
writes into the dequantized copy, as in torchao's graph (which Inductor's qconv + add fusion
needs), and a ``copy_`` right after it writes the result back into the input, so the caller's
tensor and every later reader of it still see the write (torchao's converted model drops it)::

    x2 -> q -> dq -> add_(dq, conv) -> copy_(x2, add_)
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import get_annotation
from pt2e_quant.contract.specs import EdgeOrNode
from pt2e_quant.errors import describe_node, warn_user
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.graph.aliasing import alias_classes, written_arguments
from pt2e_quant.graph.node_meta import copy_debug_handle

__all__ = ["insert_observers", "OBSERVER_PREFIX", "AliasedWriteWarning"]

OBSERVER_PREFIX = "activation_post_process_"


class AliasedWriteWarning(UserWarning):
    """An annotated edge stays float: its quantized copy would miss an in-place write."""


class _AliasedWrites:
    """Where a quantize/dequantize copy of a value would not see a write into the original."""

    def __init__(self, gm: GraphModule) -> None:
        self.order = {node: index for index, node in enumerate(gm.graph.nodes)}
        self.classes = alias_classes(gm)
        self.writes: dict[Node, list[Node]] = {}
        for node in gm.graph.nodes:
            for arg in written_arguments(node):
                if isinstance(arg, Node):
                    self.writes.setdefault(self.classes[arg], []).append(node)

    def writer_between(self, producer: Node, consumer: Node) -> Node | None:
        """The write a copy of ``producer`` read by ``consumer`` would miss, if any.

        A consumer aliasing the producer (a view of it, an in-place op on it) must always get
        the original, so the class's first write stands for the reason then.
        """
        root = self.classes.get(producer)
        writes = self.writes.get(root, [])
        if not writes or consumer not in self.order:
            return None
        if self.classes.get(consumer) is root:
            return writes[0]
        start, end = self.order[producer], self.order[consumer]
        return next((w for w in writes if start < self.order[w] < end), None)


class _Inserter:
    def __init__(self, gm: GraphModule, observers: dict[EdgeOrNode, torch.nn.Module]) -> None:
        self.gm = gm
        self.observers = observers
        self.next_index = 0
        self.aliased_writes = _AliasedWrites(gm)
        #: (producer, consumer) -> write, of the edges left float, for one warning
        self.kept_float: dict[tuple[Node, Node], Node] = {}
        #: in-place op -> the model input it writes while reading a quantized copy of it
        self.write_backs: dict[Node, Node] = {}

    def must_read_original(self, producer: Node, consumer: Node) -> bool:
        writer = self.aliased_writes.writer_between(producer, consumer)
        if writer is None:
            return False
        if writer is consumer and _writes_input_it_reads(consumer, producer):
            self.write_backs[consumer] = producer
            return False
        self.kept_float[producer, consumer] = writer
        return True

    def insert_write_backs(self) -> None:
        """After each in-place op that now writes a quantized copy of a model input, copy its
        result back into the input (see the module docstring)."""
        for writer, model_input in self.write_backs.items():
            with self.gm.graph.inserting_after(writer):
                write_back = self.gm.graph.call_function(
                    torch.ops.aten.copy_.default, (model_input, writer)
                )
            if "val" in writer.meta:
                write_back.meta["val"] = writer.meta["val"]

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
        if observer is None:
            return arg
        if self.must_read_original(producer, consumer):
            return producer
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
        readers = [u for u in node.users if not _is_guard_check(self.gm, u)]
        originals = {u for u in readers if self.must_read_original(node, u)}
        if readers and len(originals) == len(readers):
            return
        observer_node = self.insert_after(node, observer)
        copy_debug_handle(node, observer_node)
        for user in readers:
            if user is not observer_node and user not in originals:
                user.replace_input_with(node, observer_node)

    def warn_kept_float(self) -> None:
        if not self.kept_float:
            return
        edges = "; ".join(
            f"{describe_node(producer)} -> '{consumer.name}' (written by '{writer.name}')"
            for (producer, consumer), writer in list(self.kept_float.items())[:5]
        )
        more = f" and {len(self.kept_float) - 5} more" if len(self.kept_float) > 5 else ""
        warn_user(
            f"{edges}{more} stay float: the tensor is written in place through an alias, "
            "and a quantize/dequantize copy would miss that write. Write the op out of place "
            "(e.g. y = y + x instead of a view's +=) to quantize these edges; a parameter or "
            "buffer the model itself rewrites (e.g. nn.Embedding(max_norm=...)) cannot be "
            "stored quantized.",
            AliasedWriteWarning,
        )


def _label(observer: torch.nn.Module, node_name: str) -> None:
    """Tell our observers (and a fake-quant's inner one) which node they watch, for warnings;
    an observer shared by several edges keeps the first name."""
    for module in (observer, getattr(observer, "activation_post_process", None)):
        if getattr(module, "observed_node", "") is None:
            module.observed_node = node_name


def _writes_input_it_reads(consumer: Node, producer: Node) -> bool:
    """``consumer`` is an in-place op on the model input ``producer`` itself (the first write
    into it, as ``writer_between`` found): quantizing that read loses only the write, which a
    write-back restores."""
    return producer.op == "placeholder" and any(
        arg is producer for arg in written_arguments(consumer)
    )


def _is_guard_check(gm: GraphModule, node: Node) -> bool:
    # export's input guard check reads the raw user inputs; it must keep doing so
    return node.op == "call_module" and type(gm.get_submodule(str(node.target))).__name__ == (
        "GuardsFn"
    )


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
    inserter.insert_write_backs()
    inserter.warn_kept_float()
    return len(gm.graph.nodes) != count_before
