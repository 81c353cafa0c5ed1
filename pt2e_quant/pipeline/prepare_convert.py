"""The pipeline: ``prepare_pt2e`` / ``prepare_qat_pt2e`` insert observers, ``convert_pt2e`` q/dq ops.

Each function works on a copy of the model (sharing its tensors), so an error anywhere leaves
the caller's model exactly as it was, and reads as the sequence of passes it runs.
"""

from __future__ import annotations

from functools import partial

from torch.fx import GraphModule

from pt2e_quant.contract.annotation import mark_converted
from pt2e_quant.contract.foreign import describe_quantizer, translate_annotations
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.sharing import plan_sharing
from pt2e_quant.contract.validation import check_annotations
from pt2e_quant.errors import AnnotationError
from pt2e_quant.graph.copy_module import copy_graph_module
from pt2e_quant.graph.export_hooks import drop_export_hooks
from pt2e_quant.graph.quantized_regions import (
    drop_observers_of_quantized_values,
    find_quantized_regions,
)
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.passes.claim_quantized_regions import claim_quantized_regions
from pt2e_quant.passes.driver import finalize_graphs, run_pass
from pt2e_quant.passes.duplicate_dequantize import duplicate_dequantize
from pt2e_quant.passes.fold_batch_norm import fold_batch_norm
from pt2e_quant.passes.fold_quantized_constants import fold_quantized_constants
from pt2e_quant.passes.fold_simulated_batch_norm import fold_simulated_batch_norm
from pt2e_quant.passes.functionalize_restored_ops import functionalize_restored_ops
from pt2e_quant.passes.inherit_body_module_stacks import inherit_body_module_stacks
from pt2e_quant.passes.inline_grad_mode_regions import inline_grad_mode_regions
from pt2e_quant.passes.insert_observers import insert_observers
from pt2e_quant.passes.lift_body_constants import lift_body_constants
from pt2e_quant.passes.own_written_buffers import own_written_buffers
from pt2e_quant.passes.port_qdq_meta import port_qdq_meta
from pt2e_quant.passes.replace_inplace_ops import replace_inplace_ops
from pt2e_quant.passes.replace_observers import replace_observers
from pt2e_quant.passes.restore_inplace_ops import restore_inplace_ops
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from pt2e_quant.passes.simulate_batch_norm_folding import simulate_batch_norm_folding
from pt2e_quant.passes.use_eager_control_flow import restore_control_flow, use_eager_control_flow
from pt2e_quant.pipeline.gc_pause import gc_paused
from pt2e_quant.pipeline.model_checks import (
    check_graph_module,
    check_not_prepared,
    warn_if_not_exported,
    warn_if_nothing_to_convert,
)
from pt2e_quant.pipeline.observer_factory import build_observers
from pt2e_quant.pipeline.quantizer_calls import call_quantizer, name_the_quantizer
from pt2e_quant.pipeline.train_eval import disallow_eval_train, warn_training_mode_ops

__all__ = ["prepare_pt2e", "prepare_qat_pt2e", "convert_pt2e"]


def _annotate_and_observe(model: GraphModule, quantizer: Quantizer, is_qat: bool, api: str) -> None:
    """Annotate the model and every higher-order-op body, then insert their observers.

    Regions the model already holds quantized (a converted submodule) are claimed before the
    quantizer runs, and values they quantize get no second observer. Annotations written
    with torchao's classes are read into ours right after the quantizer's ``validate``.
    """
    for gm in iter_graph_modules(model):
        run_pass(gm, claim_quantized_regions, deferred=True)
        call_quantizer(quantizer, "annotate", api, gm)
        call_quantizer(quantizer, "validate", api, gm)
        try:
            translate_annotations(gm, quantizer)
            check_annotations(gm)
            if is_qat:
                # After annotation, so the weight's spec can move onto the scaled weight.
                run_pass(gm, simulate_batch_norm_folding, deferred=True)
            plan = plan_sharing(gm)
            observers = build_observers(gm, plan, is_qat, describe_quantizer(quantizer))
        except AnnotationError as error:
            name_the_quantizer(error, quantizer)
            raise
        observers = drop_observers_of_quantized_values(observers, plan, find_quantized_regions(gm))
        call_quantizer(quantizer, "prepare_obs_or_fq_callback", api, gm, observers)
        run_pass(gm, partial(insert_observers, observers=observers), deferred=True)
        run_pass(gm, use_eager_control_flow, deferred=True)


def _prepare(model: GraphModule, quantizer: Quantizer, is_qat: bool, api: str) -> GraphModule:
    check_graph_module(model, api)
    warn_if_not_exported(model, api)
    check_not_prepared(model, api)
    model = copy_graph_module(model, recompile=False)
    drop_export_hooks(model)  # a per-batch cost in calibration and training; guards stay
    deferred = partial(run_pass, deferred=True)
    changed = deferred(model, inline_grad_mode_regions)
    deferred(model, inherit_body_module_stacks)
    changed |= deferred(model, replace_inplace_ops)
    if not is_qat:
        # QAT keeps batch norm trainable: simulate_batch_norm_folding handles it after annotation.
        changed |= deferred(model, fold_batch_norm)
        warn_training_mode_ops(model, api)
        own_written_buffers(model)  # calibration must not write into the user's tensors
    if changed:
        # The quantizer's own code may run or print the model: give it up-to-date code.
        finalize_graphs(model)
    model = call_quantizer(quantizer, "transform_for_annotation", api, model)
    _annotate_and_observe(model, quantizer, is_qat, api)
    if not is_qat:
        # Calibration then writes in place where the user's model does; QAT differentiates
        # the graph, and a write into a tensor backward needs would break it.
        deferred(model, restore_inplace_ops)
    return disallow_eval_train(finalize_graphs(model))


def prepare_pt2e(model: GraphModule, quantizer: Quantizer) -> GraphModule:
    """Insert observers for post-training quantization into an exported model.

    ``model`` is ``torch.export.export(m, example_inputs).module()``. Run calibration data
    through the returned model, then call :func:`convert_pt2e`.
    """
    with gc_paused():
        return _prepare(model, quantizer, is_qat=False, api="prepare_pt2e")


def prepare_qat_pt2e(model: GraphModule, quantizer: Quantizer) -> GraphModule:
    """Insert fake-quantize modules for quantization-aware training into an exported model."""
    with gc_paused():
        return _prepare(model, quantizer, is_qat=True, api="prepare_qat_pt2e")


def convert_pt2e(
    model: GraphModule,
    use_reference_representation: bool = False,
    fold_quantize: bool = True,
) -> GraphModule:
    """Replace observers / fake-quants of a calibrated or trained model with q/dq ops.

    ``fold_quantize`` stores quantized weights as integer constants (only their dequantize
    stays); ``use_reference_representation`` rewrites quantized ops into integer arithmetic.
    """
    for name, value in (
        ("use_reference_representation", use_reference_representation),
        ("fold_quantize", fold_quantize),
    ):
        if not isinstance(value, bool):
            raise ValueError(
                f"convert_pt2e: {name} must be a bool, got {value!r}; did you pass another "
                "argument positionally?"
            )
    with gc_paused():
        return _convert(model, use_reference_representation, fold_quantize)


def _convert(
    model: GraphModule, use_reference_representation: bool, fold_quantize: bool
) -> GraphModule:
    check_graph_module(model, "convert_pt2e")
    warn_if_nothing_to_convert(model)
    # No user code runs between these passes, so the code is generated once, at the end.
    model = copy_graph_module(model, recompile=False)
    deferred = partial(run_pass, deferred=True)
    for gm in iter_graph_modules(model):
        deferred(gm, functionalize_restored_ops)
        deferred(gm, restore_control_flow)
        deferred(gm, replace_observers)
        deferred(gm, fold_simulated_batch_norm)
        deferred(gm, duplicate_dequantize)
        deferred(gm, port_qdq_meta)
        if fold_quantize:
            deferred(gm, fold_quantized_constants)
        if use_reference_representation:
            deferred(gm, rewrite_to_reference)
    deferred(model, lift_body_constants)
    for gm in iter_graph_modules(model):
        mark_converted(gm.graph.nodes)  # a later prepare must not reuse these annotations
    drop_export_hooks(model)
    return disallow_eval_train(finalize_graphs(model))
