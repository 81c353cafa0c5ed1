"""The exception hierarchy users catch, and how messages show where in the graph things went wrong.

Every error a user can trigger derives from :class:`QuantizationError`, and also from the
builtin a caller would naturally catch (``ValueError`` for bad values, ``TypeError`` for the
wrong kind of model), so ``except ValueError`` keeps working for code written against torchao.
Messages name the node, what was found, and what to do; :func:`graph_context` adds the few
neighbouring nodes so the user can find the spot without dumping the whole graph.
"""

from __future__ import annotations

from torch.fx import Node

__all__ = [
    "QuantizationError",
    "SpecError",
    "AnnotationError",
    "ModelNotExportedError",
    "graph_context",
    "describe_node",
]


class QuantizationError(Exception):
    """Base class of every error pt2e_quant raises on purpose."""


class SpecError(QuantizationError, ValueError):
    """A quantization spec or config field has an invalid value."""


class AnnotationError(QuantizationError, ValueError):
    """A quantizer's annotations contradict the graph or each other."""


class ModelNotExportedError(QuantizationError, TypeError):
    """The model passed in is not the ``GraphModule`` that ``torch.export`` produces."""


def describe_node(node: Node) -> str:
    """One line: name, op kind and target, the way users see them in ``gm.graph``."""
    target = getattr(node.target, "__name__", None) or str(node.target)
    if node.op == "call_function":
        target = str(node.target)
    return f"'{node.name}' ({node.op} {target})"


def graph_context(node: Node, radius: int = 2) -> str:
    """The nodes around ``node`` in graph order, the failing one marked with ``>>``.

    Example::

          conv2d = aten.conv2d.default(x, conv_weight, conv_bias)
        >> relu = aten.relu.default(conv2d)
          linear = aten.linear.default(relu, w, b)
    """
    graph = node.graph
    nodes = list(graph.nodes)
    try:
        index = nodes.index(node)
    except ValueError:  # the node was already erased from its graph
        return f"  {node.format_node() or node.name}"
    lo, hi = max(0, index - radius), min(len(nodes), index + radius + 1)
    lines = []
    for other in nodes[lo:hi]:
        text = other.format_node() or other.name
        text = text.strip().splitlines()[0]
        marker = ">> " if other is node else "   "
        lines.append(f"  {marker}{text}")
    return "\n".join(lines)
