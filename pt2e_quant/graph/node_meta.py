"""Which node metadata travels onto the nodes quantization inserts, and how.

Lowering and debugging read metadata from the graph: ExecuTorch partitioners and error
messages use ``stack_trace`` / ``nn_module_stack``, backends group nodes by
``quantization_tag``, and the numeric debugger matches float and quantized nodes through the
debug handle stored at ``node.meta["custom"]["numeric_debug_handle"]``. Inserted observer, q
and dq nodes inherit these from the node they stand for, by the rules in each function below.
"""

from __future__ import annotations

from torch.fx import Node

__all__ = [
    "CUSTOM_KEY",
    "NUMERIC_DEBUG_HANDLE_KEY",
    "PORTED_META_KEYS",
    "STRICT_SELF_PREFIX",
    "get_debug_handle",
    "copy_debug_handle",
    "port_meta",
]

CUSTOM_KEY = "custom"
NUMERIC_DEBUG_HANDLE_KEY = "numeric_debug_handle"

#: prefix Dynamo-traced (strict) exports have put on ``nn_module_stack`` paths; the module
#: names users write (``set_module_name("stem.0")``, report columns) never carry it
STRICT_SELF_PREFIX = "L['self']."

#: metadata a q/dq node takes from the node whose tensor it quantizes
PORTED_META_KEYS = ("stack_trace", "nn_module_stack", "quantization_tag")


def get_debug_handle(node: Node) -> int | None:
    """The node's numeric debug handle, or None."""
    custom = node.meta.get(CUSTOM_KEY)
    if isinstance(custom, dict):
        return custom.get(NUMERIC_DEBUG_HANDLE_KEY)
    return None


def copy_debug_handle(source: Node, target: Node) -> None:
    """Give ``target`` the debug handle of ``source`` (only that key of ``custom``).

    Output observers, and the dequantize nodes they become, carry the handle of the op whose
    output they observe so the debugger compares the quantized value of that op.
    """
    handle = get_debug_handle(source)
    if handle is None:
        return
    custom = dict(target.meta.get(CUSTOM_KEY) or {})
    custom[NUMERIC_DEBUG_HANDLE_KEY] = handle
    target.meta[CUSTOM_KEY] = custom


def drop_debug_handle(node: Node) -> None:
    """Remove a handle copied by node_copy where the node no longer stands for that op."""
    custom = node.meta.get(CUSTOM_KEY)
    if isinstance(custom, dict) and NUMERIC_DEBUG_HANDLE_KEY in custom:
        custom = {k: v for k, v in custom.items() if k != NUMERIC_DEBUG_HANDLE_KEY}
        if custom:
            node.meta[CUSTOM_KEY] = custom
        else:
            del node.meta[CUSTOM_KEY]


def port_meta(source: Node, target: Node) -> None:
    """Copy the lowering-relevant metadata (``PORTED_META_KEYS``) from source to target."""
    for key in PORTED_META_KEYS:
        if key in source.meta:
            target.meta[key] = source.meta[key]
