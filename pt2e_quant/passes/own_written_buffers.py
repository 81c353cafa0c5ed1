"""Give a post-training working copy its own copy of every tensor its graph writes in place.

A prepared model shares parameter and buffer tensors with the user's model
(:mod:`pt2e_quant.graph.copy_module`), which is safe while nothing writes into them. A graph exported
in training mode does: batch norm updates its running statistics, and the batch counter is
incremented, in place on every call. Calibrating such a model would then quietly change the
user's model (and the eager model it was exported from). ``prepare_pt2e`` therefore clones
exactly those tensors into the containers the copy owns.

``prepare_qat_pt2e`` does not: training the prepared model trains the model passed in, its
parameters and its batch-norm statistics alike, as with torchao (whose prepare returns the
very model it was given). Deep-copy the model first to keep a float original.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from pt2e_quant.graph.aliasing import written_attributes
from pt2e_quant.graph.aten_args import attribute_owner
from pt2e_quant.graph.copy_module import is_owned_container
from pt2e_quant.graph.subgraphs import iter_graph_modules

__all__ = ["own_written_buffers"]


def _own(gm: GraphModule, target: str, clones: dict[int, torch.Tensor]) -> bool:
    parent, leaf = attribute_owner(gm, target)
    tensor = getattr(parent, leaf, None)
    if not is_owned_container(parent) or not isinstance(tensor, torch.Tensor):
        return False
    clone = clones.setdefault(id(tensor), tensor.detach().clone())
    if leaf in parent._parameters:
        parent._parameters[leaf] = torch.nn.Parameter(clone, tensor.requires_grad)
    elif leaf in parent._buffers:
        parent._buffers[leaf] = clone
    else:
        parent.__dict__[leaf] = clone
    return True


def own_written_buffers(model: GraphModule) -> bool:
    """Clone every tensor a graph of ``model`` writes in place; True if any was cloned.

    A tensor registered under several names is cloned once, so the names stay aliases.
    """
    clones: dict[int, torch.Tensor] = {}
    changed = False
    for gm in iter_graph_modules(model):
        for target in sorted(written_attributes(gm)):
            changed |= _own(gm, target, clones)
    return changed
