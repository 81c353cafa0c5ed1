"""The exception hierarchy users catch, and how messages show where in the graph things went wrong.

Every error a user can trigger derives from :class:`QuantizationError`, and also from the
builtin a caller would naturally catch (``ValueError`` for bad values, ``TypeError`` for the
wrong kind of model), so ``except ValueError`` keeps working for code written against torchao.
Messages name the node, what was found, and what to do; :func:`graph_context` adds the few
neighbouring nodes so the user can find the spot without dumping the whole graph.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

from torch.fx import Node

__all__ = [
    "QuantizationError",
    "SpecError",
    "AnnotationError",
    "ModelNotExportedError",
    "ModelAlreadyQuantizedError",
    "graph_context",
    "describe_node",
    "warn_user",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class QuantizationError(Exception):
    """Base class of every error pt2e_quant raises on purpose."""


class SpecError(QuantizationError, ValueError):
    """A quantization spec or config field has an invalid value."""


class AnnotationError(QuantizationError, ValueError):
    """A quantizer's annotations contradict the graph or each other."""


class ModelNotExportedError(QuantizationError, TypeError):
    """The model passed in is not the ``GraphModule`` that ``torch.export`` produces."""


class ModelAlreadyQuantizedError(QuantizationError, ValueError):
    """prepare was given a model that is already prepared (it holds observers or fake-quants).

    The name is torchao-era: a model holding q/dq ops (a converted submodule, a value
    fake-quantized in ``forward``) is accepted, see :mod:`pt2e_quant.pipeline.model_checks`.
    """


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


def warn_user(message: str, category: type[Warning]) -> None:
    """Warn with the location of the user's call into pt2e_quant, however deep the pass is.

    A fixed ``stacklevel`` would point into our pipeline code whenever a pass moves; the
    user needs the line of their ``prepare_pt2e`` / ``convert_pt2e`` call.
    """
    level = 2  # stacklevel 1 is this function, 2 its caller
    frame = sys._getframe(1)
    while frame is not None and _is_package_file(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


@functools.cache
def _is_package_file(filename: str) -> bool:
    """Whether code from ``filename`` is pt2e_quant's. Cached: resolving a path costs a few
    system calls per frame, and a pass may warn once per observed edge (hundreds of times)."""
    return str(Path(filename).resolve()).startswith(_PACKAGE_DIR)
