"""What convert's observer replacement leaves behind besides q/dq: dtypes and debug handles.

A dynamic dequantize must hand a half-precision model back its own dtype, and removing a
float (pass-through) observer must not touch the numeric-debug handle of the node it observed.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import QuantizationAnnotation, QuantizationSpec, convert_pt2e, prepare_pt2e
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY
from pt2e_quant.ops import qdq_ops
from tests.core.contract.quantizer_fixtures import (
    ConvLinearQuantizer,
    FunctionQuantizer,
    int8_specs,
)
from tests.models import SingleLinear

aten = torch.ops.aten


def _handle(node: torch.fx.Node) -> int | None:
    return (node.meta.get(CUSTOM_KEY) or {}).get(NUMERIC_DEBUG_HANDLE_KEY)


def test_bf16_dynamic_dequantize_keeps_model_dtype() -> None:
    """A bfloat16 model with dynamic activation quantization: the dynamic dequantize must
    produce bfloat16 (``out_dtype``), or the linear sees float32 next to bf16 weights."""
    torch.manual_seed(0)
    model = SingleLinear().eval().to(torch.bfloat16)
    x = torch.randn(2, 4, dtype=torch.bfloat16)
    gm = torch.export.export(model, (x,)).module()
    quantizer = ConvLinearQuantizer(*int8_specs(our_observer, dynamic=True))
    prepared = prepare_pt2e(gm, quantizer)
    prepared(x)
    converted = convert_pt2e(prepared)
    (dq,) = [n for n in converted.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC]
    assert dq.kwargs.get("out_dtype") == torch.bfloat16
    out = converted(x)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), model(x).float(), atol=0.1)


def test_dropping_a_float_observer_keeps_its_inputs_debug_handle() -> None:
    """A float32 observer is removed at convert (its input passes straight through); the
    numeric debugger matches ops by handle, so the observer's handle must not be written onto
    the input node, which would make the debugger compare the wrong op."""
    float_spec = QuantizationSpec(
        dtype=torch.float32, observer_or_fake_quant_ctr=our_observer.PlaceholderObserver
    )
    x = torch.randn(2, 4)
    gm = torch.export.export(SingleLinear().eval(), (x,)).module()

    def annotate(model: GraphModule) -> None:
        for node in model.graph.nodes:
            if node.target == aten.linear.default:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: float_spec}, _annotated=True
                )

    prepared = prepare_pt2e(gm, FunctionQuantizer(annotate))
    (observer,) = [
        n
        for n in prepared.graph.nodes
        if n.op == "call_module" and str(n.target).startswith("activation_post_process")
    ]
    observer.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 7}
    observed = observer.args[0]
    observed.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 3}
    prepared(x)
    converted = convert_pt2e(prepared)
    (after,) = [n for n in converted.graph.nodes if n.name == observed.name]
    assert _handle(after) == 3
