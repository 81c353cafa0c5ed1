"""fold_index_arithmetic: input-independent integer / boolean values become buffers.

XNNPACK cannot take integer or boolean ops, so each one left in the graph is an op outside the
delegate; the pass computes those that depend on no input once. These tests pin what is
folded (structure and the stored value), what is not (broadcasts, floats, inputs, random or
uninitialised factories, written buffers, values the model returns), the "changed" flag, and
that outputs are bit-identical. test_xnnpack_vit_lowering.py counts the effect after lowering.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx import GraphModule

from pt2e_quant import prepare_pt2e
from quantizers.xnnpack.fold_index_arithmetic import fold_index_arithmetic
from tests.graph_check import assert_node_occurrence
from tests.quantizers.xnnpack._xnnpack_quantize import PER_CHANNEL, aten, global_quantizer


class PositionMask(nn.Module):
    """x (2,5) ─ where(mask, x, 0) ─ out;  mask: arange(5) + 0 ─ [None, :] ─ >= 1 ─ expand(2,5)

    The mask is built as transformers builds attention masks: from positions and an offset."""

    def forward(self, x: Tensor) -> Tensor:
        positions = torch.arange(x.shape[1]) + 0
        mask = (positions[None, :] >= 1).expand(x.shape[0], -1)
        return torch.where(mask, x, 0.0)


def _export(model: nn.Module, *inputs: Tensor) -> GraphModule:
    return torch.export.export(model, inputs).module()


def _folded_buffers(gm: GraphModule) -> dict[str, Tensor]:
    return {n: b for n, b in gm.named_buffers() if n.startswith("_folded_index_")}


def test_position_mask_becomes_one_boolean_buffer_read_by_the_expand() -> None:
    x = torch.randn(2, 5)
    gm = _export(PositionMask(), x)
    expected = gm(x)
    assert fold_index_arithmetic(gm) is True
    assert_node_occurrence(
        gm,
        {
            aten.arange.default: 0,
            aten.arange.start: 0,
            aten.add.Tensor: 0,
            aten.unsqueeze.default: 0,
            aten.ge.Scalar: 0,
            aten.expand.default: 1,
            aten.where.ScalarOther: 1,
        },
    )
    (buffer,) = _folded_buffers(gm).values()
    assert torch.equal(buffer, torch.tensor([[False, True, True, True, True]]))
    (expand,) = [n for n in gm.graph.nodes if n.target == aten.expand.default]
    assert expand.args[0].op == "get_attr"
    assert torch.equal(gm(x), expected)
    assert fold_index_arithmetic(gm) is False


def test_positions_of_a_dynamic_length_are_left_to_compute() -> None:
    """``arange(seq)`` reads the input's symbolic length: it depends on the input."""
    x = torch.randn(2, 5)
    seq = torch.export.Dim("seq", min=2, max=64)
    gm = torch.export.export(PositionMask(), (x,), dynamic_shapes=({1: seq},)).module()
    assert fold_index_arithmetic(gm) is False
    assert_node_occurrence(gm, {aten.ge.Scalar: 1})


def test_a_broadcast_is_left_to_compute_from_its_folded_inputs() -> None:
    """``q[:, None] >= k[None, :]`` would store 4x4 values computed from two vectors of 4."""

    class Causal(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            positions = torch.arange(4)
            return torch.where(positions[:, None] >= positions[None, :], x, 0.0)

    x = torch.randn(4, 4)
    gm = _export(Causal(), x)
    expected = gm(x)
    assert fold_index_arithmetic(gm) is True
    assert_node_occurrence(gm, {aten.arange.default: 0, aten.ge.Tensor: 1})
    assert sorted(b.shape for b in _folded_buffers(gm).values()) == [(1, 4), (4, 1)]
    assert torch.equal(gm(x), expected)


def test_float_values_inputs_and_random_or_uninitialised_factories_stay() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3))

        def forward(self, x: Tensor, idx: Tensor) -> tuple[Tensor, ...]:
            noise = torch.randint(0, 3, (3,)) + 1  # a new draw on every call
            scratch = torch.empty(3, dtype=torch.int64) + 1  # uninitialised: nothing to store
            return F.linear(x, self.w * 0.5), idx + 1, x + noise, x + scratch

    gm = _export(Mixed(), torch.randn(2, 3), torch.tensor([1, 2]))
    before = [n.target for n in gm.graph.nodes]
    assert fold_index_arithmetic(gm) is False
    assert [n.target for n in gm.graph.nodes] == before


def test_a_buffer_the_model_writes_is_not_a_constant() -> None:
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("count", torch.zeros((), dtype=torch.int64))

        def forward(self, x: Tensor) -> Tensor:
            scale = self.count * 2  # read before the write: 0 now, 2 on the next call
            self.count.add_(1)
            return x * scale

    x = torch.ones(2)
    gm = _export(Counter(), x)
    assert fold_index_arithmetic(gm) is False
    assert [gm(x).tolist() for _ in range(2)] == [[0.0, 0.0], [2.0, 2.0]]


def test_a_value_the_model_returns_keeps_its_op() -> None:
    """The output reads the mul itself; only its input, ``arange + 1``, is stored."""

    class Positions(nn.Module):
        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return x * 2.0, (torch.arange(3) + 1) * 2

    x = torch.randn(3)
    gm = _export(Positions(), x)
    assert fold_index_arithmetic(gm) is True
    assert_node_occurrence(gm, {aten.arange.default: 0, aten.add.Tensor: 0})
    (output,) = [n for n in gm.graph.nodes if n.op == "output"]
    returned = output.args[0][1]
    assert returned.target == aten.mul.Tensor and returned.args[0].op == "get_attr"
    assert torch.equal(gm(x)[1], torch.tensor([2, 4, 6]))


def test_a_factory_read_directly_is_not_stored() -> None:
    """``embedding_bag`` reads its ``arange`` offsets directly: one op either way."""
    model = nn.EmbeddingBag(10, 4, mode="mean")
    gm = _export(model, torch.randint(0, 10, (3, 2)))
    assert_node_occurrence(gm, {aten.arange.start_step: 1})
    assert fold_index_arithmetic(gm) is False


def test_xnnpack_prepare_folds_before_annotating() -> None:
    x = torch.randn(2, 5)
    gm = _export(PositionMask(), x)
    prepared = prepare_pt2e(copy.deepcopy(gm), global_quantizer(PER_CHANNEL))
    assert_node_occurrence(prepared, {aten.arange.default: 0, aten.ge.Scalar: 0})
    assert len(_folded_buffers(prepared)) == 1
    assert torch.equal(prepared(x), gm(x))
