"""Delete the module tensors a pass has orphaned, so they do not ship with the model.

Folding changes which tensors a graph reads: a batch norm folded into its conv leaves the
batch norm's weight, bias and running statistics behind, and a weight stored pre-quantized
leaves its float original. Nothing computes with them any more, but a module keeps every
tensor registered on it: ``state_dict()`` still lists them and ``torch.export`` lifts each
one into the program, so they would be serialized into a ``.pte``. The pass that orphans a
tensor names it here once no node reads it.

Only the plain attribute containers ``torch.export`` nests tensors in (and graph modules) are
edited: the working copy owns those (:mod:`pt2e_quant.graph.copy_module`), whereas any other module
is shared with the user's model and must not change.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.fx import GraphModule

from pt2e_quant.graph.aten_args import attribute_owner
from pt2e_quant.graph.copy_module import is_owned_container

__all__ = ["delete_unread_tensors"]


def _referenced_targets(gm: GraphModule) -> set[str]:
    """Every attribute path a node of ``gm`` reads, with each of its parent paths."""
    targets = set()
    for node in gm.graph.nodes:
        if node.op in ("get_attr", "call_module"):
            path = str(node.target)
            while path:
                targets.add(path)
                path = path.rpartition(".")[0]
    return targets


def _is_empty(module: torch.nn.Module) -> bool:
    return not (module._parameters or module._buffers or module._modules)


def delete_unread_tensors(gm: GraphModule, targets: Iterable[str]) -> None:
    """Delete each tensor in ``targets`` that no node of ``gm`` reads, then any container
    left empty by that (a folded batch norm's, say), up to ``gm`` itself."""
    referenced = _referenced_targets(gm)
    for target in sorted(set(targets) - referenced):
        path = target
        while path and path not in referenced:
            parent, leaf = attribute_owner(gm, path)
            child = getattr(parent, leaf, None)
            if not is_owned_container(parent) or child is None:
                break
            if isinstance(child, torch.nn.Module) and not (
                is_owned_container(child) and _is_empty(child)
            ):
                break
            delattr(parent, leaf)
            path = path.rpartition(".")[0]
