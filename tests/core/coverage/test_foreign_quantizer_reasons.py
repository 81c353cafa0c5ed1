"""explain() on a model annotated by a quantizer written for torchao (not our base class).

Such a quantizer has no ``rule_ops`` / ``post_ops`` / ``scope_decision`` / ``leaf_quantizers``;
the coverage code reads each with a default that claims nothing, so statuses still come from
the graph, an op the quantizer never annotated reads "not annotated by <quantizer>", and an op
it annotated but left float gets the evidence-based reasons. ``quantize()`` accepts such a
quantizer as it accepts ours.
"""

from __future__ import annotations

import pytest
import torch

from pt2e_quant import QuantizationAnnotation, QuantizationSpec, explain, quantize
from pt2e_quant.observer import MinMaxObserver
from tests.cli_models import tiny

INT8 = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-128,
    quant_max=127,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=MinMaxObserver,
)
NOT_ANNOTATED = (
    "not annotated by LinearOnly (it declares no rule table, so whether it covers this op is "
    "unknown)"
)


class LinearOnly:
    """torchao's quantizer shape, duck-typed: int8 linears; ``claim_only`` marks them
    annotated with no spec at all (annotated, yet float)."""

    def __init__(self, claim_only: bool = False) -> None:
        self.claim_only = claim_only

    def transform_for_annotation(self, model):
        return model

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.target is torch.ops.aten.linear.default:
                inputs = {} if self.claim_only else {node.args[0]: INT8, node.args[1]: INT8}
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    inputs, None if self.claim_only else INT8, _annotated=True
                )
        return model

    def validate(self, model) -> None:
        pass

    def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq) -> None:
        pass


def _quantize(quantizer: LinearOnly):
    model, example = tiny()
    return quantize(model, example, quantizer, backend=None, calibration=[example], progress=False)


def test_ops_it_never_annotated_read_not_annotated() -> None:
    result = _quantize(LinearOnly())
    rows = {row.node: (row.quantized, row.reason) for row in result.coverage.rows}
    assert rows == {
        "conv2d": (False, NOT_ANNOTATED),
        "relu": (False, NOT_ANNOTATED),
        "linear": (True, None),
    }
    assert result.coverage.backend is None
    assert result.coverage.summary() == "3 compute ops: 1 quantized, 2 float (2 not annotated)"


def test_an_op_it_annotated_but_left_float_gets_the_evidence_reason() -> None:
    result = _quantize(LinearOnly(claim_only=True))
    report = explain(result.module, result.quantizer)
    linear = next(row for row in report.rows if row.op == "linear")
    assert not linear.quantized
    assert linear.reason == "input not quantized ('flatten' is float)"


def test_quantize_still_refuses_what_is_not_a_quantizer() -> None:
    model, example = tiny()
    with pytest.raises(ValueError, match="a quantizer written for torchao .* got object"):
        quantize(model, example, object(), backend=None)
