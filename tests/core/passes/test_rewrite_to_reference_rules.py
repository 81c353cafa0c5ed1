"""rewrite_to_reference on hand-built q/dq graphs: which patterns it may rewrite, and which not.

The pass promises integer arithmetic that matches the q/dq graph: bit for bit for standalone
q/dq, within one output step for fused ops. Each test here pins one case where a rewrite that
looks harmless would change a user's numbers or output dtype, or where a supported dtype
must not be left behind as a q/dq op the reference graph is meant to be free of.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from tests.graph_check import assert_node_occurrence, count_ops

aten = torch.ops.aten
Q = qdq_ops.QUANTIZE_PER_TENSOR
DQ = qdq_ops.DEQUANTIZE_PER_TENSOR
I8 = (-128, 127, torch.int8)


def _rewritten(model: nn.Module, inputs: tuple) -> tuple[torch.fx.GraphModule, object]:
    """(graph after the pass, the outputs before it); asserts the pass reported a change."""
    gm = torch.export.export(model, inputs).module()
    expected = gm(*inputs)
    assert run_pass(gm, rewrite_to_reference) is True
    return gm, expected


def test_int16_qdq_is_rewritten_bit_identically() -> None:
    """16-bit activations (a16w8 configs) are static integer q/dq too: they must become
    plain arithmetic like 8-bit ones, not stay as quantized_decomposed ops."""

    class Int16RoundTrip(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = qdq_ops.QUANTIZE_PER_TENSOR_ANY(x, 1e-3, 5, -32768, 32767, torch.int16)
            return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(q, 1e-3, 5, -32768, 32767, torch.int16)

    inputs = (torch.randn(64) * 10,)
    gm, expected = _rewritten(Int16RoundTrip(), inputs)
    assert_node_occurrence(gm, {Q: 0, DQ: 0})
    assert torch.equal(gm(*inputs), expected)


def test_dequantize_to_bfloat16_is_left_alone() -> None:
    """A dq with ``out_dtype=bfloat16`` (a bf16 model) has no float32 formula to copy; the
    rewrite would hand bf16 consumers a float32 tensor."""

    class Bf16Dequantize(nn.Module):
        def forward(self, q: torch.Tensor) -> torch.Tensor:
            return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(q, 0.1, 0, *I8, out_dtype=torch.bfloat16)

    q = torch.randint(-128, 128, (16,), dtype=torch.int8)
    gm = torch.export.export(Bf16Dequantize(), (q,)).module()
    expected = gm(q)
    assert rewrite_to_reference(gm) is False
    assert count_ops(gm)[DQ] == 1
    assert gm(q).dtype == torch.bfloat16 and torch.equal(gm(q), expected)


def test_quantize_of_a_bfloat16_tensor_is_left_alone() -> None:
    """``x * (1 / scale)`` in bf16 rounds differently from the kernel, which computes in
    float32: rewriting it would move values across quantization steps.

    uint8: an int8 quantize takes torchao's form whatever its input's dtype, as torchao's
    pattern does (``test_rewrite_to_reference_torchao``)."""

    class Bf16Quantize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return qdq_ops.QUANTIZE_PER_TENSOR_ANY(
                x.to(torch.bfloat16), 0.0137, 131, 0, 255, torch.uint8
            )

    x = torch.linspace(-1.7, 1.7, 4001)
    gm = torch.export.export(Bf16Quantize(), (x,)).module()
    expected = gm(x)
    assert rewrite_to_reference(gm) is False
    assert count_ops(gm)[Q] == 1
    assert torch.equal(gm(x), expected)


def _is_cast_to(node: object, dtype: torch.dtype) -> bool:
    """True for ``aten.to.dtype(x, dtype)``: how the fused rules feed integers to an op."""
    return (
        isinstance(node, torch.fx.Node) and node.target is aten.to.dtype and node.args[1] == dtype
    )


class QuantizedLinear(nn.Module):
    """dq(x) , dq(w) -> linear -> q: the fused pattern, with the activation dtype a parameter."""

    def __init__(self, act: tuple, weight_axis: int = 0) -> None:
        super().__init__()
        self.act = act
        self.weight_axis = weight_axis
        torch.manual_seed(0)
        self.register_buffer("w", torch.randint(-127, 128, (6, 6), dtype=torch.int8))
        self.register_buffer("w_scales", torch.rand(6) * 0.02 + 0.001)
        self.register_buffer("w_zero_points", torch.zeros(6, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qx = qdq_ops.QUANTIZE_PER_TENSOR_ANY(x, 0.02, 0, *self.act)
        w_args = (self.w_scales, self.w_zero_points, self.weight_axis, *I8)
        y = nn.functional.linear(
            qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(qx, 0.02, 0, *self.act),
            qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY(self.w, *w_args),
        )
        return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
            qdq_ops.QUANTIZE_PER_TENSOR_ANY(y, 0.05, 0, *I8), 0.05, 0, *I8
        )


def test_int16_inputs_are_not_fused() -> None:
    """The fused rewrite's int32 accumulator is only safe for 8-bit operands (see the module
    docstring); a 16-bit activation keeps its float linear between rewritten q/dq."""
    inputs = (torch.randn(3, 6),)
    gm, expected = _rewritten(QuantizedLinear((-32768, 32767, torch.int16)), inputs)
    (linear,) = gm.graph.find_nodes(op="call_function", target=aten.linear.default)
    assert not any(_is_cast_to(arg, torch.float64) for arg in linear.args)
    assert torch.equal(gm(*inputs), expected)


def test_weight_quantized_along_input_channels_is_not_fused() -> None:
    """The fused rule applies the weight scales along the output channels; a weight quantized
    along axis 1 (input channels) would get the wrong scale per output, so it stays unfused
    and exact."""
    inputs = (torch.randn(3, 6),)
    gm, expected = _rewritten(QuantizedLinear(I8, weight_axis=1), inputs)
    (linear,) = gm.graph.find_nodes(op="call_function", target=aten.linear.default)
    assert not any(_is_cast_to(arg, torch.float64) for arg in linear.args)
    assert torch.equal(gm(*inputs), expected)


def test_add_with_alpha_is_not_fused() -> None:
    """``torch.add(a, b, alpha=2)`` carries alpha as a kwarg the integer add ignores: fusing
    it would drop the factor."""

    class AddAlpha(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            da = qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(a, 0.02, 0, *I8), 0.02, 0, *I8
            )
            db = qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(b, 0.02, 0, *I8), 0.02, 0, *I8
            )
            y = torch.add(da, db, alpha=2)
            return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(y, 0.06, 0, *I8), 0.06, 0, *I8
            )

    inputs = (torch.randn(32), torch.randn(32))
    gm, expected = _rewritten(AddAlpha(), inputs)
    (add,) = [
        n for n in gm.graph.find_nodes(op="call_function", target=aten.add.Tensor) if n.kwargs
    ]
    assert add.kwargs == {"alpha": 2}
    assert torch.equal(gm(*inputs), expected)


def test_max_pool_with_different_output_qparams_is_requantized() -> None:
    """Pooling the integer tensor is exact only when input and output share qparams; with a
    different output scale the result must still be requantized, not passed through."""

    class RescalingPool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            dx = qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(x, 0.02, 0, *I8), 0.02, 0, *I8
            )
            y = nn.functional.max_pool2d(dx, 2)
            return qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
                qdq_ops.QUANTIZE_PER_TENSOR_ANY(y, 0.05, 0, *I8), 0.05, 0, *I8
            )

    inputs = (torch.randn(1, 2, 4, 4),)
    gm, expected = _rewritten(RescalingPool(), inputs)
    (pool,) = gm.graph.find_nodes(op="call_function", target=aten.max_pool2d.default)
    assert not _is_cast_to(pool.args[0], torch.int8), "pooled the integers of another scale"
    assert torch.equal(gm(*inputs), expected)
