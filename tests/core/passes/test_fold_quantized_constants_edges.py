"""Which quantize ops ``fold_quantized_constants`` leaves alone.

Only quantize ops fed by module tensors are folded into stored integer constants. A tensor the
model creates itself (``torch.ones``, ``torch.arange``) has no module tensor behind it; torchao
skips such constructors too (backends generate them cheaply), so pre-computing them would
store a buffer no peer stores and change the graph a lowering sees. Nor is a module tensor a
node of the graph writes: its quantized value would be frozen at convert time. Nor is a
quantize computed from a dequantize's output: torchao's folding stops at every dequantize.
"""

from __future__ import annotations

import pytest
import torch
from torch.fx import GraphModule

from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.fold_quantized_constants import FROZEN_PARAM_PREFIX, fold_quantized_constants


class AddsQuantizedOnes(torch.nn.Module):
    """x + dq(q(torch.ones(4))): a quantized tensor built by a constructor, no module tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = qdq_ops.QUANTIZE_PER_TENSOR(torch.ones(4), 0.05, 0, -128, 127, torch.int8)
        return x + qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -128, 127, torch.int8)


def _quantize_count(gm: GraphModule) -> int:
    return sum(n.target is qdq_ops.QUANTIZE_PER_TENSOR for n in gm.graph.nodes)


def test_quantized_constructor_output_is_not_folded():
    """A quantize of ``torch.ones(...)`` stays in the graph: no frozen buffer, same outputs."""
    x = torch.randn(2, 4)
    gm = torch.export.export(AddsQuantizedOnes(), (x,)).module()
    assert _quantize_count(gm) == 1
    expected = gm(x)
    assert run_pass(gm, fold_quantized_constants) is False
    assert _quantize_count(gm) == 1
    assert not any(name.startswith(FROZEN_PARAM_PREFIX) for name, _ in gm.named_buffers())
    torch.testing.assert_close(gm(x), expected, rtol=0, atol=0)


class DecayedRowBuffer(torch.nn.Module):
    """buf[0] = buf[0] / 2 + x[0] (written through a ``select`` view), then
    x + dq(q(buf.clone())): the quantize reads the buffer through another alias."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("buf", torch.zeros(2, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.buf[0].mul_(0.5)
        self.buf[0].add_(x[0])
        q = qdq_ops.QUANTIZE_PER_TENSOR(self.buf.clone(), 0.05, 0, -128, 127, torch.int8)
        return x + qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -128, 127, torch.int8)


class DecomposedBufferUpdate(torch.nn.Module):
    """What ``run_decompositions`` makes of ``buf.mul_(0.5)``: ``copy_(buf, buf * 0.5)``, with
    the quantize reading ``buf`` itself before the write."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("buf", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = qdq_ops.QUANTIZE_PER_TENSOR(self.buf, 0.05, 0, -128, 127, torch.int8)
        out = x + qdq_ops.DEQUANTIZE_PER_TENSOR(q, 0.05, 0, -128, 127, torch.int8)
        self.buf.mul_(0.5)
        return out


def _exported(model: torch.nn.Module, x: torch.Tensor, decompose: bool) -> GraphModule:
    program = torch.export.export(model, (x,))
    return (program.run_decompositions() if decompose else program).module()


@pytest.mark.parametrize(
    ("model", "decompose"),
    [(DecayedRowBuffer, False), (DecomposedBufferUpdate, True)],
    ids=["written_through_a_view", "written_by_copy_"],
)
def test_quantize_of_a_written_buffer_is_not_folded(model, decompose: bool):
    """A buffer some node writes is not a constant, whichever alias the quantize reads it
    through: the pass leaves the quantize alone and every call sees the updated buffer."""
    x = torch.randn(2, 4) if model is DecayedRowBuffer else torch.randn(4)
    gm = _exported(model(), x, decompose)
    reference = _exported(model(), x, decompose)
    assert run_pass(gm, fold_quantized_constants) is False
    assert _quantize_count(gm) == 1
    outputs = [gm(x) for _ in range(3)]
    for output in outputs:
        torch.testing.assert_close(output, reference(x), rtol=0, atol=0)
    assert not torch.equal(outputs[0], outputs[2])  # the buffer moved the output


class ReadOnlyAndWrittenBuffers(torch.nn.Module):
    """Two buffers: ``scale`` only read (its quantize folds), ``state`` written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.full((4,), 0.5))
        self.register_buffer("state", torch.zeros(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state.add_(x)
        q_scale = qdq_ops.QUANTIZE_PER_TENSOR(self.scale, 0.05, 0, -128, 127, torch.int8)
        q_state = qdq_ops.QUANTIZE_PER_TENSOR(self.state * 1, 0.05, 0, -128, 127, torch.int8)
        dq = qdq_ops.DEQUANTIZE_PER_TENSOR
        return dq(q_scale, 0.05, 0, -128, 127, torch.int8) * dq(
            q_state, 0.05, 0, -128, 127, torch.int8
        )


def test_only_the_unwritten_buffer_is_folded():
    x = torch.randn(4) / 4
    gm = torch.export.export(ReadOnlyAndWrittenBuffers(), (x,)).module()
    assert run_pass(gm, fold_quantized_constants) is True
    assert _quantize_count(gm) == 1  # the state's quantize stays
    assert [n for n, _ in gm.named_buffers() if n.startswith(FROZEN_PARAM_PREFIX)] == [
        f"{FROZEN_PARAM_PREFIX}0"
    ]


class RequantizedWeight(torch.nn.Module):
    """x * dq2(q2(reshape(dq1(q1(weight))))): a weight quantized, reshaped and quantized again,
    as the Arm TOSA quantizer's decomposed layer norm leaves its weight::

        weight ─ q1 ─ dq1 ─ reshape ─ q2 ─ dq2 ─┐
        x ─────────────────────────────────── mul ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, dq = qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR
        first = dq(q(self.weight, 0.01, 0, -128, 127, torch.int8), 0.01, 0, -128, 127, torch.int8)
        second = q(first.reshape(4, 4), 0.03, 0, -128, 127, torch.int8)
        return x * dq(second, 0.03, 0, -128, 127, torch.int8)


def test_folding_stops_at_a_dequantize():
    """Only q1 folds; dq1, the reshape, q2 and dq2 stay in that order, as torchao leaves them
    (regression: the whole chain used to fold into one int8 constant read by dq2)."""
    x = torch.randn(4, 4)
    gm = torch.export.export(RequantizedWeight(), (x,)).module()
    expected = gm(x)
    assert run_pass(gm, fold_quantized_constants) is True
    calls = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert calls == [
        qdq_ops.DEQUANTIZE_PER_TENSOR,
        torch.ops.aten.reshape.default,
        qdq_ops.QUANTIZE_PER_TENSOR,
        qdq_ops.DEQUANTIZE_PER_TENSOR,
        torch.ops.aten.mul.Tensor,
    ]
    (frozen,) = [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert getattr(gm, str(frozen.target)).dtype == torch.int8
    assert [u.target for u in frozen.users] == [qdq_ops.DEQUANTIZE_PER_TENSOR]
    torch.testing.assert_close(gm(x), expected, rtol=0, atol=0)
