"""Recognising prepared and converted models wherever their observers or q/dq ops live, and
the GraphModules torch.export did not produce.

prepare refuses a model that is already prepared, and convert warns when it has nothing to
convert. Both look at the whole model: a control-flow branch may hold the only observers,
and a converted model holds q/dq ops but no observers. Getting this wrong either observes
observers (a second prepare) or tells the user a quantized model "comes back unquantized".

A ``torch.fx.symbolic_trace`` result is accepted, as torchao accepts it, with a warning: it
has no ``meta["val"]``, which every pass reading shapes and dtypes must then do without.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import (
    ModelAlreadyQuantizedError,
    ModelNotExportedError,
    QuantizationAnnotation,
    convert_pt2e,
    move_exported_model_to_eval,
    prepare_pt2e,
    prepare_qat_pt2e,
)
from pt2e_quant.ops import qdq_ops
from pt2e_quant.pipeline import model_checks
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.contract.quantizer_fixtures import UINT8_MINMAX, FunctionQuantizer

aten = torch.ops.aten


class MulInsideCond(nn.Module):
    """cond(sum(x) > 0, relu(x) * 2, x - 1): the only quantized op sits in the true branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda v: torch.relu(v) * 2, lambda v: v - 1, (x,))


def _quantize_mul(gm: torch.fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.target is aten.mul.Tensor:
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: UINT8_MINMAX},
                output_qspec=UINT8_MINMAX,
                _annotated=True,
            )


def _prepared_with_observers_only_in_a_branch() -> tuple[torch.fx.GraphModule, torch.Tensor]:
    x = torch.rand(4) + 0.1
    gm = torch.export.export(MulInsideCond(), (x,)).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(_quantize_mul))
    top_level = [n for n in prepared.graph.nodes if n.op == "call_module"]
    assert [n.target for n in top_level] == ["_guards_fn"]  # the case under test
    prepared(x)
    return prepared, x


def test_observers_inside_a_branch_make_the_model_prepared():
    """Preparing again is refused even though the top-level graph holds no observer."""
    prepared, _ = _prepared_with_observers_only_in_a_branch()
    with pytest.raises(ModelAlreadyQuantizedError, match="already prepared"):
        prepare_pt2e(prepared, FunctionQuantizer(_quantize_mul))


def test_converting_observers_inside_a_branch_does_not_warn():
    """Observers in a branch are something to convert: no "nothing to convert" warning."""
    prepared, x = _prepared_with_observers_only_in_a_branch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        converted = convert_pt2e(prepared)
    torch.testing.assert_close(converted(x), torch.relu(x) * 2, rtol=0, atol=0.05)


def test_converting_a_converted_model_does_not_claim_it_is_float():
    """A converted model has q/dq ops and no observers; converting it again is a no-op and
    must not warn that the model "comes back unquantized"."""
    prepared, x = _prepared_with_observers_only_in_a_branch()
    converted = convert_pt2e(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = convert_pt2e(converted)
    assert torch.equal(again(x), converted(x))


class AtenCalls(nn.Module):
    """x ─ aten.linear ─ aten.relu;  y ─ aten.conv2d ─ aten.add(c, c)

    Written with aten ops, so a symbolic_trace of it holds what backend rules match, but no
    ``meta["val"]`` on any node."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(torch.randn(2, 4)), nn.Parameter(torch.randn(2))
        self.cw = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = aten.conv2d.default(y, self.cw)
        return aten.relu.default(aten.linear.default(x, self.w, self.b)), aten.add.Tensor(c, c)


def _backend_quantizer(backend: str, qat: bool):
    if backend == "xnnpack":
        config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
        return XNNPACKQuantizer().set_global(config)
    return X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=qat)
    )


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
@pytest.mark.parametrize("backend", ["xnnpack", "x86"])
def test_a_symbolic_trace_without_val_metadata_runs_end_to_end(backend: str, qat: bool) -> None:
    """Passes that read ``meta["val"]`` do without it: what the rules match is quantized
    (outputs of unknown type stay float), calibration and convert run. torchao's XNNPACK
    quantizer raises ``KeyError: 'val'`` here."""
    torch.manual_seed(0)
    model = AtenCalls().train(qat)
    example = (torch.randn(3, 4), torch.randn(1, 3, 5, 5))
    prepare = prepare_qat_pt2e if qat else prepare_pt2e
    with pytest.warns(model_checks.NotExportedGraphWarning, match="the AtenCalls GraphModule"):
        prepared = prepare(torch.fx.symbolic_trace(model), _backend_quantizer(backend, qat))
    prepared(*example)
    converted = convert_pt2e(prepared)
    assert sum(n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL for n in converted.graph.nodes) == 2
    for ours, reference in zip(converted(*example), model(*example), strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0.3)


def test_convert_accepts_a_symbolic_trace_without_a_second_warning() -> None:
    """Nothing to convert is the one thing to say (prepare already warned about the trace)."""
    traced = torch.fx.symbolic_trace(AtenCalls())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_pt2e(traced)
    assert [type(w.message) for w in caught] == [model_checks.NothingToConvertWarning]


def test_train_eval_switches_still_refuse_a_symbolic_trace() -> None:
    """They rewrite the aten dropout / batch norm export records; a traced graph has none."""
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.Dropout()))
    with pytest.raises(ModelNotExportedError, match="symbolic_trace"):
        move_exported_model_to_eval(traced)


def test_a_model_with_its_own_q_dq_is_prepared() -> None:
    """q/dq ops are no sign of an earlier prepare (see the differential test for the result)."""

    class OwnFakeQuant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = qdq_ops.QUANTIZE_PER_TENSOR(x, 0.1, 0, 0, 255, torch.uint8)
            return qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.1, 0, 0, 255, torch.uint8) * 2

    x = torch.rand(4)
    prepared = prepare_pt2e(
        torch.export.export(OwnFakeQuant(), (x,)).module(), FunctionQuantizer(_quantize_mul)
    )
    prepared(x)
    assert len([n for n in prepared.graph.nodes if n.op == "call_module"]) == 3  # guards, 2 obs
