"""Recognising the models the pipeline accepts, and telling users how to get one.

prepare and convert work on the GraphModule that ``torch.export.export(...).module()``
returns: its nodes carry ``meta["val"]`` (fake tensors with shapes and dtypes) and call aten
ops, which is what backend rules match. An eager module and an ``ExportedProgram`` are common
mistakes with a simple fix, so they are refused. Any other GraphModule is accepted, as torchao
accepts it, with a warning: a ``torch.fx.symbolic_trace`` result calls modules and torch
functions instead of aten ops, so backends usually annotate nothing in it.

Preparing a prepared model is refused: it would observe the observers, and the quantizer
then fails on a graph it does not recognise, blaming its own config. q/dq ops are no reason
to refuse (torchao does not): a model may fake-quantize a value in its own forward, or hold a
submodule converted earlier, whose regions prepare leaves alone
(:mod:`pt2e_quant.graph.quantized_regions`). Preparing a wholly converted model is then a no-op
rather than a certain mistake: a second quantizer may cover ops the first one left float.
Converting a model that was never prepared warns, since it silently returns the float model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.errors import (
    ModelAlreadyQuantizedError,
    ModelNotExportedError,
    describe_node,
    warn_user,
)
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize

__all__ = [
    "model_is_exported",
    "check_graph_module",
    "warn_if_not_exported",
    "check_exported_graph_module",
    "check_not_prepared",
    "warn_if_nothing_to_convert",
    "NothingToConvertWarning",
    "NotExportedGraphWarning",
]


class NothingToConvertWarning(UserWarning):
    """convert_pt2e found no observer, fake-quantize or q/dq op: the model stays float."""


class NotExportedGraphWarning(UserWarning):
    """The GraphModule was not captured by torch.export: backend rules may find nothing in it."""


def model_is_exported(model: Any) -> bool:
    """True for a GraphModule produced by ``torch.export`` (its nodes carry ``meta['val']``)."""
    return isinstance(model, GraphModule) and any("val" in node.meta for node in model.graph.nodes)


def check_graph_module(model: Any, api: str) -> None:
    """Raise :class:`ModelNotExportedError`, naming the fix, unless ``model`` is a GraphModule.

    torchao's prepare and convert accept any GraphModule, so this refuses only what cannot
    work: an ``ExportedProgram`` (its ``.module()`` was meant) or an eager module.
    """
    if isinstance(model, torch.export.ExportedProgram):
        raise ModelNotExportedError(
            f"{api} received a torch.export.ExportedProgram; pass its module instead: "
            f"{api}(exported_program.module(), ...)"
        )
    if isinstance(model, GraphModule):
        return
    if isinstance(model, torch.nn.Module):
        raise ModelNotExportedError(
            f"{api} received an eager {type(model).__name__} that was not exported. Capture "
            f"it first: {api}(torch.export.export(model, example_inputs).module(), ...)"
        )
    raise ModelNotExportedError(
        f"{api} expects the GraphModule returned by torch.export.export(model, "
        f"example_inputs).module(), got {type(model).__name__}"
    )


def _not_exported_message(model: GraphModule, api: str) -> str:
    return (
        f"{api}: the {type(model).__name__} GraphModule has no export metadata (is it a "
        "torch.fx.symbolic_trace result?). Backend rules match the aten ops torch.export "
        "records; this graph calls modules and torch functions, so it may get nothing "
        "annotated and stay float. Capture the model with "
        "torch.export.export(model, example_inputs).module() instead."
    )


def warn_if_not_exported(model: GraphModule, api: str) -> None:
    """Warn (:class:`NotExportedGraphWarning`) when ``torch.export`` did not produce ``model``.

    prepare accepts such a graph, as torchao does, so migrated code keeps running; the
    warning says why the result may come back float.
    """
    if not model_is_exported(model):
        warn_user(_not_exported_message(model, api), NotExportedGraphWarning)


def check_exported_graph_module(model: Any, api: str) -> None:
    """Raise :class:`ModelNotExportedError` unless ``model`` is an exported GraphModule
    (for the train / eval switches, which rewrite the aten ops export records)."""
    check_graph_module(model, api)
    if not model_is_exported(model):
        raise ModelNotExportedError(_not_exported_message(model, api))


def _first_observer_node(model: GraphModule) -> Node | None:
    for gm in iter_graph_modules(model):
        for node in gm.graph.nodes:
            if node.op == "call_module" and is_observer_or_fake_quant(
                gm.get_submodule(str(node.target))
            ):
                return node
    return None


def _first_qdq_node(model: GraphModule) -> Node | None:
    for gm in iter_graph_modules(model):
        for node in gm.graph.nodes:
            if is_quantize(node) or is_dequantize(node):
                return node
    return None


def check_not_prepared(model: GraphModule, api: str) -> None:
    """Raise :class:`ModelAlreadyQuantizedError` if ``model`` holds observers or fake-quants.

    Only a prepare inserts those as modules (export turns a module called in ``forward`` into
    ops), so their presence means the model was prepared already: the fix is to calibrate and
    convert it, or to prepare the float model. q/dq ops are accepted, see the module doc.
    """
    node = _first_observer_node(model)
    if node is not None:
        raise ModelAlreadyQuantizedError(
            f"{api}: the model is already prepared ({describe_node(node)} is an observer or "
            f"fake-quantize module). Calibrate or train it and call convert_pt2e, or pass the "
            f"exported float model to {api}."
        )


def warn_if_nothing_to_convert(model: GraphModule) -> None:
    """Warn when convert would return ``model`` float: it has nothing convert acts on."""
    if _first_observer_node(model) is not None or _first_qdq_node(model) is not None:
        return
    warn_user(
        "convert_pt2e: the model has no observer or fake-quantize modules, so it comes back "
        "unquantized. Call prepare_pt2e (or prepare_qat_pt2e) and calibrate before "
        "convert_pt2e; if you did, the quantizer annotated nothing: "
        "pt2e_quant.explain(model, quantizer) says why each op stayed float.",
        NothingToConvertWarning,
    )
