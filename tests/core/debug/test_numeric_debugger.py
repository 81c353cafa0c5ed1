"""The numeric debugger's seed contract (seed 004), then its metrics and error messages.

The first twelve tests are one per seed test, through our API and our seed models; the rest
check the metrics against ``torch.ao.ns.fx.utils`` as an oracle, degenerate data and the errors
users see.
"""

from __future__ import annotations

import copy
import math
from collections import Counter

import pytest
import torch
from torch.ao.ns.fx import utils as ns_utils

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug import (
    OutputLogger,
    QuantizationComparisonResult,
    bfs_trace_with_node_process,
    compare_results,
    compute_cosine_similarity,
    compute_mse,
    compute_normalized_l2,
    compute_sqnr,
    extract_results_from_loggers,
    generate_numeric_debug_handle,
    module_path,
    prepare_for_propagation_comparison,
)
from pt2e_quant.graph.node_meta import drop_debug_handle, get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops import qdq_ops
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models.seed_models import (
    ControlFlow,
    Conv2dThenConv1d,
    Conv2dWithSplit,
    TwoLinearModule,
)


def _handled_program(model: torch.nn.Module) -> torch.export.ExportedProgram:
    ep = torch.export.export(model.eval(), model.example_inputs(), strict=True)
    generate_numeric_debug_handle(ep)
    return ep


def _assert_every_node_has_handle(model) -> None:
    def check(node):
        assert get_debug_handle(node) is not None, f"{node.format_node()} has no debug handle"

    bfs_trace_with_node_process(model, check)


def _handles_by_name(model) -> dict[str, int]:
    found: dict[str, int] = {}

    def record(node):
        if get_debug_handle(node) is not None:
            found[str(node)] = get_debug_handle(node)

    bfs_trace_with_node_process(model, record)
    return found


def _handles_by_module_stack(model) -> dict[str, int]:
    found: dict[str, int] = {}

    def record(node):
        handle = get_debug_handle(node)
        if handle is None:
            return
        key = str(node.meta.get("nn_module_stack"))
        assert found.setdefault(key, handle) == handle, f"{node} breaks the handle of {key}"

    bfs_trace_with_node_process(model, record)
    return found


def _xnnpack_per_tensor() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=False))


def _compare_float_and_quantized(model: torch.nn.Module):
    example = model.example_inputs()
    m = _handled_program(model).module()
    ref_logged = prepare_for_propagation_comparison(m)
    prepared = prepare_pt2e(m, _xnnpack_per_tensor())
    prepared(*example)
    quant_logged = prepare_for_propagation_comparison(convert_pt2e(prepared))
    ref_logged(*example)
    quant_logged(*example)
    return compare_results(
        extract_results_from_loggers(ref_logged), extract_results_from_loggers(quant_logged)
    )


# ---- seed 004, one test per seed test ------------------------------------------------------


def test_simple():
    ep = _handled_program(Conv2dThenConv1d())
    _assert_every_node_has_handle(ep)
    handles = _handles_by_name(ep)
    assert len(set(handles.values())) == len(handles)
    assert handles == {"conv2d": 1, "squeeze": 2, "conv1d": 3}


def test_control_flow():
    ep = _handled_program(ControlFlow())
    _assert_every_node_has_handle(ep)
    handles = _handles_by_name(ep)
    assert len(set(handles.values())) == len(handles)
    bodies = list(iter_graph_modules(ep.graph_module))[1:]
    assert len(bodies) == 5  # map body, outer cond's branches, inner cond's branches
    for body in bodies:
        assert any(get_debug_handle(n) is not None for n in body.graph.nodes)


def test_quantize_pt2e_preserve_handle():
    model = Conv2dThenConv1d()
    example = model.example_inputs()
    ep = _handled_program(model)
    prepared = prepare_pt2e(ep.module(), _xnnpack_per_tensor())
    counts = Counter(get_debug_handle(n) for n in prepared.graph.nodes)
    assert [counts[h] for h in (1, 2, 3)] == [2, 2, 2]  # op + its output observer
    prepared(*example)
    converted = convert_pt2e(prepared)
    _assert_every_node_has_handle(ep)
    counts = Counter(get_debug_handle(n) for n in converted.graph.nodes)
    assert [counts[h] for h in (1, 2, 3)] == [2, 2, 2]  # op + the dequantize of its output
    for node in converted.graph.nodes:
        if get_debug_handle(node) is not None:
            assert node.target in (
                torch.ops.aten.conv2d.default,
                torch.ops.aten.squeeze.dim,
                torch.ops.aten.conv1d.default,
                qdq_ops.DEQUANTIZE_PER_TENSOR,
            ), f"{node} must not carry a handle"


def test_copy_preserve_handle():
    ep = _handled_program(Conv2dThenConv1d())
    ref = _handles_by_name(ep)
    assert _handles_by_name(copy.copy(ep)) == ref
    _assert_every_node_has_handle(ep)


def test_deepcopy_preserve_handle():
    ep = _handled_program(Conv2dThenConv1d())
    ref = _handles_by_name(ep)
    assert _handles_by_name(copy.deepcopy(ep)) == ref
    _assert_every_node_has_handle(ep)


def test_re_export_preserve_handle():
    model = Conv2dThenConv1d()
    ep = _handled_program(model)
    re_exported = torch.export.export(ep.module(), model.example_inputs(), strict=True)
    _assert_every_node_has_handle(re_exported)
    assert _handles_by_name(re_exported) == _handles_by_name(ep)


def test_run_decompositions_same_handle_id():
    ep = _handled_program(Conv2dThenConv1d())
    ref = _handles_by_name(ep)
    decomposed = copy.copy(ep).run_decompositions()
    _assert_every_node_has_handle(decomposed)
    assert set(_handles_by_name(decomposed).values()) == set(ref.values())


@pytest.mark.parametrize("model_cls", [TwoLinearModule, Conv2dThenConv1d])
def test_run_decompositions_map_handle_to_new_nodes(model_cls):
    ep = _handled_program(model_cls())
    ref = _handles_by_module_stack(ep)
    decomposed = copy.copy(ep).run_decompositions()
    _assert_every_node_has_handle(decomposed)
    assert _handles_by_module_stack(decomposed) == ref
    if model_cls is TwoLinearModule:
        by_name = _handles_by_name(decomposed)
        assert (by_name["permute"], by_name["mm"]) == (1, 1)
        assert (by_name["permute_1"], by_name["addmm"]) == (2, 2)


def test_prepare_for_propagation_comparison():
    model = Conv2dThenConv1d()
    example = model.example_inputs()
    m = _handled_program(model).module()
    original_code = m.code
    logged = prepare_for_propagation_comparison(m)
    loggers = [mod for mod in logged.modules() if isinstance(mod, OutputLogger)]
    assert len(loggers) == 3
    assert "conv2d" in [logger.node_name for logger in loggers]
    assert m.code == original_code  # the original is untouched
    assert not any(isinstance(mod, OutputLogger) for mod in m.modules())
    torch.testing.assert_close(logged(*example), m(*example), rtol=0, atol=0)
    logged.graph.eliminate_dead_code()
    assert sum(n.op == "call_module" and "logger" in n.name for n in logged.graph.nodes) == 3


def test_extract_results_from_loggers():
    summaries = _compare_float_and_quantized(Conv2dThenConv1d())
    assert sorted(summaries) == [1, 2, 3]
    for summary in summaries.values():
        assert summary.actual_node_name.startswith("dequantize_per_tensor")
        assert summary.results[0].sqnr >= 35


def test_extract_results_from_loggers_list_output():
    summaries = _compare_float_and_quantized(Conv2dWithSplit())
    list_outputs = 0
    for summary in summaries.values():
        sqnr = summary.results[0].sqnr
        if isinstance(sqnr, list):
            list_outputs += 1
            assert all(s >= 35 for s in sqnr)
        else:
            assert sqnr >= 35
    assert list_outputs == 1  # the split


def test_added_node_gets_unique_id():
    ep = _handled_program(Conv2dThenConv1d())
    ref = _handles_by_name(ep)
    assert set(Counter(ref.values()).values()) == {1}
    output = next(iter(reversed(ep.graph.nodes)))
    returned = output.args[0][0]
    with ep.graph.inserting_before(output):
        relu = ep.graph.call_function(torch.ops.aten.relu.default, (returned,))
    returned.replace_all_uses_with(relu, delete_user_cb=lambda user: user is not relu)
    ep.graph_module.recompile()
    generate_numeric_debug_handle(ep)
    _assert_every_node_has_handle(ep)
    after = _handles_by_name(ep)
    counts = Counter(after.values())
    for name, handle in ref.items():
        assert after[name] == handle
        assert counts[handle] == 1
    assert after["relu_default"] == 4 and counts[4] == 1


# ---- metrics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ours, oracle",
    [
        (compute_sqnr, ns_utils.compute_sqnr),
        (compute_normalized_l2, ns_utils.compute_normalized_l2_error),
        (compute_cosine_similarity, ns_utils.compute_cosine_similarity),
        (compute_mse, torch.nn.functional.mse_loss),
    ],
)
def test_metrics_match_torch_ao_oracles(ours, oracle):
    torch.manual_seed(0)
    ref = torch.randn(4, 8)
    actual = ref + 0.05 * torch.randn(4, 8)
    expected = oracle(ref, actual)
    assert ours(ref, actual).shape == ()
    torch.testing.assert_close(ours(ref, actual), expected.reshape(()))


def test_metrics_on_degenerate_data():
    x = torch.randn(3, 3)
    zero = torch.zeros(3, 3)
    assert compute_sqnr(x, x.clone()) == math.inf
    assert compute_sqnr(zero, zero) == math.inf
    assert compute_sqnr(zero, x) == -math.inf
    assert compute_normalized_l2(x, x) == 0 and compute_normalized_l2(zero, x) == math.inf
    assert compute_cosine_similarity(x, x) == pytest.approx(1.0)
    assert compute_cosine_similarity(zero, x) == 0
    nan = x.clone()
    nan[0, 0] = math.nan
    for metric in (compute_sqnr, compute_mse, compute_normalized_l2, compute_cosine_similarity):
        assert torch.isnan(metric(x, nan))
    assert compute_sqnr(torch.arange(4), torch.arange(4) + 1) > 0  # integers compare as float


def test_result_keeps_structure_and_skips_non_tensors():
    a, b = torch.ones(2), torch.ones(2) * 1.01
    result = QuantizationComparisonResult(actual=(b, 3, None), ref=(a, 3, None))
    sqnr = result.sqnr
    assert isinstance(sqnr, list) and sqnr[1:] == [None, None]
    torch.testing.assert_close(sqnr[0], compute_sqnr(a, b))
    as_dict = QuantizationComparisonResult(actual={"y": b}, ref={"y": a})
    assert set(as_dict.mse_loss) == {"y"}
    torch.testing.assert_close(as_dict.l2["y"], compute_normalized_l2(a, b))
    torch.testing.assert_close(as_dict.cosine["y"], compute_cosine_similarity(a, b))


def test_module_path():
    stack = {"L__self__": ("", object), "L__self__stem.0": ("stem.0", object)}
    assert module_path(stack) == "stem.0"
    assert module_path(None) == "" and module_path({}) == ""
    # the spelling scoping setters match on: without a strict export's "L['self']." prefix
    assert module_path({"L__self___stem_0": ("L['self'].stem.0", object)}) == "stem.0"


# ---- errors --------------------------------------------------------------------------------


def test_shape_mismatch_names_handle_and_nodes():
    ref = {7: ("conv2d", None, [torch.ones(2, 3)])}
    actual = {7: ("dequantize_per_tensor_3", None, [torch.ones(3, 2)])}
    with pytest.raises(ValueError, match=r"debug handle 7.*'conv2d'.*'dequantize_per_tensor_3'"):
        compare_results(ref, actual)


def test_compare_skips_handles_missing_on_actual_side():
    ref = {1: ("a", None, [torch.ones(2)]), 2: ("b", None, [torch.ones(2)])}
    actual = {2: ("b", None, [torch.ones(2)])}
    assert list(compare_results(ref, actual)) == [2]


def test_generate_rejects_graph_module():
    gm = _handled_program(Conv2dThenConv1d()).module()
    with pytest.raises(ValueError, match=r"ExportedProgram, got GraphModule.*before calling"):
        generate_numeric_debug_handle(gm)


def test_bfs_trace_rejects_other_types():
    with pytest.raises(ValueError, match="got Linear"):
        bfs_trace_with_node_process(torch.nn.Linear(2, 2), print)


def test_handle_less_dequantize_is_logged_for_its_op():
    """torchao's layout (op[h] -> q -> dq, no handle on q/dq): the dq's logger stands for h."""
    model = Conv2dThenConv1d()
    example = model.example_inputs()
    prepared = prepare_pt2e(_handled_program(model).module(), _xnnpack_per_tensor())
    prepared(*example)
    converted = convert_pt2e(prepared)
    for node in converted.graph.nodes:
        if node.target == qdq_ops.DEQUANTIZE_PER_TENSOR:
            drop_debug_handle(node)
    logged = prepare_for_propagation_comparison(converted)
    logged(*example)
    names = {h: name for h, (name, _, _) in extract_results_from_loggers(logged).items()}
    assert sorted(names) == [1, 2, 3]
    assert all(name.startswith("dequantize_per_tensor") for name in names.values()), names


def test_re_exported_converted_model_with_a_multi_output_op_compares():
    """Re-export copies split's handle onto the getitems it creates: the pieces (and the
    dequantize of each quantized piece) are not logged again under split's handle, so split
    is compared as a whole, as before re-export, and numeric_report can replay its pieces."""
    from pt2e_quant.debug import numeric_report

    model = Conv2dWithSplit()
    example = model.example_inputs()
    ep = _handled_program(model)
    float_gm = ep.module()
    prepared = prepare_pt2e(copy.deepcopy(float_gm), _xnnpack_per_tensor())
    prepared(*example)
    re_exported = torch.export.export(convert_pt2e(prepared), example).module()
    split = next(n for n in re_exported.graph.nodes if n.target is torch.ops.aten.split.Tensor)
    assert {get_debug_handle(u) for u in split.users} == {get_debug_handle(split)}
    loggers = [prepare_for_propagation_comparison(gm) for gm in (float_gm, re_exported)]
    for logged in loggers:
        logged(*example)
    summary = compare_results(*map(extract_results_from_loggers, loggers))
    split_result = summary[get_debug_handle(split)].results[0]
    assert isinstance(split_result.sqnr, list) and all(s >= 35 for s in split_result.sqnr)
    assert numeric_report(ep, re_exported, example).rows
