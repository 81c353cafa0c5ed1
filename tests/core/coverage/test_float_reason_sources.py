"""explain()'s quantized flag and float reason when a float input is not what it seems.

Pins three readings of the graph: a float *constant* (a weight) is never "the float input"
that blocked a pattern; a float op inside a cond body reads a float *op* there, which is not
the body boundary; and an op that reads a float integer-valued producer directly is not
"fused" into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers import (
    ComposableQuantizer,
    EmbeddingQuantizer,
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.ptq import explain_quantized


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


class GroupedTransposed(nn.Module):
    """x ─ conv ─ conv_transpose(groups=2) ─ out: XNNPACK has no rule for grouped ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.up = nn.ConvTranspose2d(4, 4, 2, groups=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.conv(x))


def test_float_weight_is_not_reported_as_the_float_input() -> None:
    """The activation arrives quantized and the weight is a float constant, as every weight
    is before quantization; the user must read "pattern not matched", not be sent looking
    for a float producer that does not exist."""
    report = explain_quantized(GroupedTransposed(), (torch.randn(1, 4, 4, 4),), _xnnpack())
    (row,) = [r for r in report.rows if r.op == "conv_transpose2d"]
    assert (row.quantized, row.reason) == (False, "pattern not matched by any xnnpack rule")


class CondPool(nn.Module):
    """cond(x.sum() > 0, max_pool2d(hardswish(x)), max_pool2d(x)), pools of size 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(
            x.sum() > 0,
            lambda x: F.max_pool2d(F.hardswish(x), 1),
            lambda x: F.max_pool2d(x, 1),
            (x,),
        )


def test_float_producer_inside_a_body_is_not_the_body_boundary() -> None:
    """Only a body *input* that enters float is blamed on the sub-graph; a pool fed by a
    float hardswish in the same body is an ordinary "input not quantized"."""
    report = explain_quantized(CondPool(), (torch.randn(1, 2, 4, 4),), _xnnpack())
    reasons = {r.node: r.reason for r in report.rows}
    assert reasons["true_graph_0.max_pool2d"] == "input not quantized ('hardswish' is float)"
    assert reasons["false_graph_0.max_pool2d"] == (
        "inside a cond sub-graph (its input 'x' enters it float)"
    )


class ShiftedEmbedding(nn.Module):
    """int64 i ─ add(1) ─ embedding ─ out: the embedding reads an unannotated compute op."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, i: Tensor) -> Tensor:
        return self.emb(i + 1)


def test_op_reading_an_unclaimed_compute_op_is_not_fused_into_it() -> None:
    """The weight-only embedding is quantized even though its indices come straight from an
    integer add that no quantizer claimed; that add is no pattern anchor to fuse into."""
    quantizer = ComposableQuantizer([EmbeddingQuantizer(), _xnnpack()])
    report = explain_quantized(ShiftedEmbedding(), (torch.arange(3),), quantizer)
    assert [(r.op, r.quantized, r.reason) for r in report.rows] == [
        ("add", False, "unsupported dtype torch.int64"),
        ("embedding", True, None),
    ]


def test_an_op_in_scope_of_one_composed_quantizer_is_not_blamed_on_another_ones_scope() -> None:
    """The first XNNPACK quantizer has the grouped transposed conv in scope, the second scopes
    it out; the op stayed float because no rule matches it, not because of the second one's
    setter, so the scope check must stop at the first quantizer that keeps the op."""
    quantizer = ComposableQuantizer([_xnnpack(), _xnnpack().set_module_name("up", None)])
    report = explain_quantized(GroupedTransposed(), (torch.randn(1, 4, 4, 4),), quantizer)
    (row,) = [r for r in report.rows if r.op == "conv_transpose2d"]
    assert (row.quantized, row.reason) == (False, "pattern not matched by any xnnpack/xnnpack rule")


class ConvRelu(nn.Module):
    """x ─ conv ─ relu ─ out: one x86 fusion pattern."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))


def test_an_op_fused_into_a_float_anchor_reports_the_anchors_reason() -> None:
    """X86 claims a scoped-out conv+relu as float, so the relu's anchor is the conv; the
    relu is float for the conv's reason (its scope), and "fused into" would claim a fusion
    that never ran."""
    quantizer = (
        X86InductorQuantizer()
        .set_global(get_default_x86_inductor_quantization_config())
        .set_module_name_qconfig("conv", None)
    )
    report = explain_quantized(ConvRelu(), (torch.randn(1, 3, 4, 4),), quantizer)
    filtered = "filtered by scope setter (set_module_name_qconfig('conv'))"
    assert [(r.node, r.quantized, r.reason) for r in report.rows] == [
        ("conv2d", False, filtered),
        ("relu", False, filtered),
    ]


class RenormalisedEmbedding(nn.Module):
    """``nn.Embedding(max_norm=1)``: every lookup first rescales the rows it reads, in place::

    weight ─ detach ─ embedding_renorm_(·, i)   (writes the table)
    weight ─ embedding(·, i) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4, max_norm=1.0)

    def forward(self, i: Tensor) -> Tensor:
        return self.emb(i)


def test_a_table_the_model_rewrites_is_reported_as_written_in_place() -> None:
    """The rule matched the lookup; prepare kept the table float because a stored quantized
    table would never be renormalised. "pattern not matched" would send the user looking
    for a rule problem."""
    report = explain_quantized(RenormalisedEmbedding(), (torch.arange(3),), EmbeddingQuantizer())
    (row,) = report.rows
    assert row.quantized is False
    assert row.reason.startswith("written in place by 'embedding_renorm_' (its input 'emb_weight'")
    assert report.summary().endswith("(1 written in place)")
