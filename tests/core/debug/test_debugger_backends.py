"""The debugger flow on real backends: our XNNPACK / X86 Inductor quantizers, QAT, torchao.

For each model the float program gets handles, is quantized, and both sides are logged and
compared. Checks: every quantized value (each dequantize of an op's output) is compared, and
each comparison's SQNR is finite and at least ``MIN_SQNR_DB``.

Why 15 dB: an 8-bit per-tensor quantized value alone is ~40-48 dB; the debugger compares
*propagated* values, so error accumulates through depth, and on these random-init models the
deepest values land around 25 dB. A handle attached to the wrong node (or a broken q/dq)
gives 0 dB or less, so 15 dB separates the two with margin on both sides.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.debug import (
    NodeAccuracySummary,
    compare_results,
    extract_results_from_loggers,
    generate_numeric_debug_handle,
    prepare_for_propagation_comparison,
)
from pt2e_quant.graph.node_meta import get_debug_handle
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize
from pt2e_quant.pipeline.train_eval import move_exported_model_to_eval
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.models import ZOO, CondLinear, ScanLinear

MIN_SQNR_DB = 15.0

XNNPACK_MODELS = ["resnet_basic_block", "tiny_mobilenet_v3", "transformer_encoder_block"]


def _handled_module(model: torch.nn.Module) -> GraphModule:
    ep = torch.export.export(model, model.example_inputs())
    generate_numeric_debug_handle(ep)
    return ep.module()


def _calibrate(prepared: GraphModule, example: tuple) -> None:
    with torch.no_grad():
        for batch in (example, tuple(-t for t in example), tuple(map(torch.randn_like, example))):
            prepared(*batch)


def _compare(float_gm: GraphModule, quantized: GraphModule, example: tuple):
    """Log both models on ``example`` and its negation (so both branches of a cond run)."""
    ref, actual = (prepare_for_propagation_comparison(gm) for gm in (float_gm, quantized))
    with torch.no_grad():
        for batch in (example, tuple(-t for t in example)):
            ref(*batch)
            actual(*batch)
    return compare_results(extract_results_from_loggers(ref), extract_results_from_loggers(actual))


def _quantized_handles(converted: GraphModule) -> set[int]:
    """Handles whose value reaches the next op through a dequantize (ours or torchao's layout)."""
    handles = set()
    for gm in iter_graph_modules(converted):
        for node in gm.graph.nodes:
            if not is_dequantize(node) or not is_quantize(node.args[0]):
                continue
            handle = get_debug_handle(node) or get_debug_handle(node.args[0].args[0])
            if handle is not None:
                handles.add(handle)
    return handles


def _sqnrs(summary: NodeAccuracySummary) -> list[float]:
    values = []
    for result in summary.results:
        sqnr = result.sqnr
        for value in sqnr if isinstance(sqnr, list) else [sqnr]:
            if value is not None:
                values.append(float(value))
    return values


def _assert_debugger_covers(summaries: dict, converted: GraphModule) -> None:
    quantized = _quantized_handles(converted)
    assert quantized, "nothing was quantized"
    assert quantized <= set(summaries), f"not compared: {sorted(quantized - set(summaries))}"
    for handle in quantized:
        summary = summaries[handle]
        assert summary.results, f"handle {handle} recorded nothing"
        for sqnr in _sqnrs(summary):
            assert not math.isnan(sqnr) and sqnr != -math.inf, (handle, summary.ref_node_name)
            assert sqnr >= MIN_SQNR_DB, (handle, summary.ref_node_name, sqnr)


def _ptq(model_factory, quantizer, seed: int = 0):
    torch.manual_seed(seed)
    model = model_factory().eval()
    example = model.example_inputs()
    float_gm = _handled_module(model)
    prepared = prepare_pt2e(copy.deepcopy(float_gm), quantizer)
    _calibrate(prepared, example)
    converted = convert_pt2e(prepared)
    return _compare(float_gm, converted, example), converted


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", XNNPACK_MODELS)
def test_xnnpack(name: str, per_channel: bool) -> None:
    config = get_symmetric_quantization_config(is_per_channel=per_channel)
    summaries, converted = _ptq(ZOO[name], XNNPACKQuantizer().set_global(config))
    _assert_debugger_covers(summaries, converted)


@pytest.mark.parametrize("name", ["resnet_basic_block", "tiny_mobilenet_v2"])
def test_x86_inductor(name: str) -> None:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    summaries, converted = _ptq(ZOO[name], quantizer)
    _assert_debugger_covers(summaries, converted)


@pytest.mark.parametrize("model_cls", [CondLinear, ScanLinear])
def test_control_flow_bodies_are_compared(model_cls) -> None:
    """Loggers go inside bodies: the linear inside a cond branch / scan body is compared."""
    config = get_symmetric_quantization_config(is_per_channel=True)
    summaries, converted = _ptq(model_cls, XNNPACKQuantizer().set_global(config))
    _assert_debugger_covers(summaries, converted)
    top_level = {get_debug_handle(n) for n in converted.graph.nodes}
    assert _quantized_handles(converted) - top_level, "no quantized value inside a body"


def _train(prepared: GraphModule, example: tuple, steps: int = 3) -> None:
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01)
    for _ in range(steps):
        loss = prepared(*(torch.randn_like(t) for t in example)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _qat(name: str):
    """QAT flow; the float reference gets the trained weights and BN statistics back."""
    torch.manual_seed(0)
    model = ZOO[name]().train()
    example = model.example_inputs()
    float_gm = _handled_module(model)
    reference = copy.deepcopy(float_gm)
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    prepared = prepare_qat_pt2e(float_gm, XNNPACKQuantizer().set_global(config))
    _train(prepared, example)
    assert not reference.load_state_dict(prepared.state_dict(), strict=False).missing_keys
    converted = convert_pt2e(move_exported_model_to_eval(prepared))
    summaries = _compare(move_exported_model_to_eval(reference), converted, example)
    return summaries, converted


def test_qat_without_batch_norm() -> None:
    summaries, converted = _qat("transformer_encoder_block")
    _assert_debugger_covers(summaries, converted)


# The core keeps the conv's handle on the conv that BN folding turned into conv+BN, so the
# debugger compares the float conv's output (before BN) with the folded conv's (after BN).
# Hidden on zoo models whose BN is still at its identity initialisation; visible as soon as
# BN statistics are real. Reported to the lead; the fix belongs in passes/fold_batch_norm.py
# and passes/fold_simulated_batch_norm.py (the folded conv should take the BN's handle).


def _randomize_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 3)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return model


def test_ptq_batch_norm_folding_keeps_comparisons_meaningful() -> None:
    def factory():
        return _randomize_batch_norms(ZOO["resnet_basic_block"]())

    summaries, _ = _ptq(factory, XNNPACKQuantizer().set_global(get_symmetric_quantization_config()))
    assert min(min(_sqnrs(s)) for s in summaries.values()) >= MIN_SQNR_DB


def test_qat_batch_norm_folding_keeps_comparisons_meaningful() -> None:
    summaries, _ = _qat("resnet_basic_block")
    assert min(min(_sqnrs(s)) for s in summaries.values()) >= MIN_SQNR_DB


@pytest.mark.torchao
@pytest.mark.executorch
def test_torchao_converted_graph() -> None:
    """torchao 0.18's convert leaves q/dq without handles; the dq is still logged for the op."""
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as et
    from torchao.quantization.pt2e import quantize_pt2e as ao

    torch.manual_seed(0)
    model = ZOO["tiny_mobilenet_v2"]().eval()
    example = model.example_inputs()
    float_gm = _handled_module(model)
    quantizer = et.XNNPACKQuantizer().set_global(et.get_symmetric_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = ao.prepare_pt2e(copy.deepcopy(float_gm), quantizer)
        _calibrate(prepared, example)
        converted = ao.convert_pt2e(prepared)
    assert not any(get_debug_handle(n) for n in converted.graph.nodes if is_dequantize(n))
    summaries = _compare(float_gm, converted, example)
    _assert_debugger_covers(summaries, converted)
    for handle in _quantized_handles(converted):
        assert summaries[handle].actual_node_name.startswith("dequantize")
