"""Recognising prepared and converted models wherever their observers or q/dq ops live.

prepare refuses a model that is already prepared, and convert warns when it has nothing to
convert. Both look at the whole model: a control-flow branch may hold the only observers,
and a converted model holds q/dq ops but no observers. Getting this wrong either observes
observers (a second prepare) or tells the user a quantized model "comes back unquantized".
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import (
    ModelAlreadyQuantizedError,
    QuantizationAnnotation,
    convert_pt2e,
    prepare_pt2e,
)
from tests.core.quantizer_fixtures import UINT8_MINMAX, FunctionQuantizer

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
