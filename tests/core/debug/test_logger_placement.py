"""Which nodes the output loggers stand for, and which loggers count as results.

A handle's logged value must be the op's own output (or the dequantize of its quantized output),
never a later re-quantization of it, never a body graph passed to a control-flow op, and a
branch that did not run must not show up as a compared op with no values.
"""

from __future__ import annotations

import pytest
import torch
from torch.fx import Graph, GraphModule

import pt2e_quant  # noqa: F401  (registers the quantized_decomposed ops)
from pt2e_quant.debug import (
    MissingDebugHandlesError,
    extract_results_from_loggers,
    generate_numeric_debug_handle,
    prepare_for_propagation_comparison,
)
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY
from pt2e_quant.ops import qdq_ops
from tests.models.seed_models import ControlFlow


def _logged_control_flow() -> dict:
    model = ControlFlow()
    inputs = model.example_inputs()  # both predicates False: the true branches never run
    ep = torch.export.export(model, inputs, strict=True)
    generate_numeric_debug_handle(ep)
    logged = prepare_for_propagation_comparison(ep.module())
    logged(*inputs)
    return extract_results_from_loggers(logged)


def test_only_loggers_that_recorded_a_value_are_results() -> None:
    """The untaken ``cond`` branches have loggers but no values: they are not results."""
    results = _logged_control_flow()
    assert results
    assert all(stats for _, _, stats in results.values()), {
        handle: name for handle, (name, _, stats) in results.items() if not stats
    }


def test_body_graphs_passed_to_control_flow_ops_are_not_logged() -> None:
    """``get_attr`` of a branch / map body carries a handle but is not a value to compare."""
    results = _logged_control_flow()
    for handle, (name, _, stats) in results.items():
        assert not any(isinstance(value, GraphModule) for value in stats), (handle, name)
        assert not name.startswith(("body_graph", "true_graph", "false_graph")), (handle, name)


def _requantized_graph() -> tuple[GraphModule, str]:
    """``x ─ relu[h=1] ─ q(0.1) ─ dq[h=1] ─ q(0.2) ─ dq ─ out``: an input requantized for a
    consumer that wants other qparams; only the first dq stands for the relu's output."""
    graph = Graph()
    x = graph.placeholder("x")
    relu = graph.call_function(torch.ops.aten.relu.default, (x,))
    q1 = graph.call_function(qdq_ops.QUANTIZE_PER_TENSOR, (relu, 0.1, 0, -128, 127, torch.int8))
    dq1 = graph.call_function(qdq_ops.DEQUANTIZE_PER_TENSOR, (q1, 0.1, 0, -128, 127, torch.int8))
    q2 = graph.call_function(qdq_ops.QUANTIZE_PER_TENSOR, (dq1, 0.2, 0, -128, 127, torch.int8))
    dq2 = graph.call_function(qdq_ops.DEQUANTIZE_PER_TENSOR, (q2, 0.2, 0, -128, 127, torch.int8))
    graph.output(dq2)
    for node in (relu, dq1):
        node.meta[CUSTOM_KEY] = {NUMERIC_DEBUG_HANDLE_KEY: 1}
    return GraphModule(torch.nn.Module(), graph), dq1.name


def test_a_requantized_copy_does_not_stand_for_the_op() -> None:
    gm, first_dequantize = _requantized_graph()
    logged = prepare_for_propagation_comparison(gm)
    x = torch.tensor([0.05, 0.12, 0.33, -1.0])
    logged(x)

    name, _, (value,) = extract_results_from_loggers(logged)[1]

    assert name == first_dequantize
    torch.testing.assert_close(value, torch.tensor([0.0, 0.1, 0.3, 0.0]))  # scale 0.1 grid


class _TwoLinears(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_a_model_without_handles_is_refused_rather_than_compared_empty() -> None:
    """torchao 0.18's flow needs no generate_numeric_debug_handle call; written that way for
    pt2e_quant, it would log nothing and compare_results would report no op at all."""
    gm = torch.export.export(_TwoLinears(), (torch.randn(2, 4),)).module()
    with pytest.raises(MissingDebugHandlesError, match=r"generate_numeric_debug_handle\(ep\)"):
        prepare_for_propagation_comparison(gm)


def test_a_program_or_an_eager_module_is_refused_with_the_fix() -> None:
    model = _TwoLinears()
    ep = torch.export.export(model, (torch.randn(2, 4),))
    generate_numeric_debug_handle(ep)
    with pytest.raises(TypeError, match=r"got ExportedProgram \(pass ep\.module\(\)\)"):
        prepare_for_propagation_comparison(ep)
    with pytest.raises(TypeError, match="got _TwoLinears"):
        prepare_for_propagation_comparison(model)
