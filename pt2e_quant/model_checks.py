"""Recognising the models the pipeline accepts, and telling users how to get one.

prepare and convert work on the GraphModule that ``torch.export.export(...).module()``
returns: its nodes carry ``meta["val"]`` (fake tensors with shapes and dtypes) that annotators
and passes rely on. An eager module, an ``ExportedProgram`` or a ``symbolic_trace`` result are
common mistakes, each with a simple fix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule

from pt2e_quant.errors import ModelNotExportedError

__all__ = ["model_is_exported", "check_exported_graph_module"]


def model_is_exported(model: Any) -> bool:
    """True for a GraphModule produced by ``torch.export`` (its nodes carry ``meta['val']``)."""
    return isinstance(model, GraphModule) and any("val" in node.meta for node in model.graph.nodes)


def check_exported_graph_module(model: Any, api: str) -> None:
    """Raise :class:`ModelNotExportedError` unless ``model`` is an exported GraphModule."""
    if isinstance(model, torch.export.ExportedProgram):
        raise ModelNotExportedError(
            f"{api} received a torch.export.ExportedProgram; pass its module instead: "
            f"{api}(exported_program.module(), ...)"
        )
    if model_is_exported(model):
        return
    if isinstance(model, GraphModule):
        raise ModelNotExportedError(
            f"{api} received a GraphModule without export metadata (is it a "
            "torch.fx.symbolic_trace result?). Capture the model with "
            "torch.export.export(model, example_inputs).module() instead."
        )
    if isinstance(model, torch.nn.Module):
        raise ModelNotExportedError(
            f"{api} received an eager {type(model).__name__} that was not exported. Capture "
            f"it first: {api}(torch.export.export(model, example_inputs).module(), ...)"
        )
    raise ModelNotExportedError(
        f"{api} expects the GraphModule returned by torch.export.export(model, "
        f"example_inputs).module(), got {type(model).__name__}"
    )
