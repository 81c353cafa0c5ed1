"""Folding quantizes constant weights in place (pt2e_quant.ops.constant_quantize): the integer
weights must be exactly what the quantized_decomposed op returns (values, dtype, strides),
and anything the in-place form would compute differently must go back to the op."""

from __future__ import annotations

import pytest
import torch

from pt2e_quant.ops import constant_quantize, qdq_ops
from pt2e_quant.ops.constant_quantize import quantize_constant

RANGES = [
    (-128, 127, torch.int8),
    (-127, 127, torch.int8),
    (0, 255, torch.uint8),
    (-8, 7, torch.int8),
    (-32768, 32767, torch.int16),
    (-(2**31), 2**31 - 1, torch.int32),
]


def _weight(seed: int, shape=(6, 5, 3, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g) * 3
    w.view(-1)[:8] = torch.tensor([0.5, 1.5, -0.5, -2.5, 0.25, 1e-30, 400.0, -400.0])
    return w


def _assert_same(lean: torch.Tensor | None, expected: torch.Tensor) -> None:
    assert lean is not None
    assert lean.dtype == expected.dtype and lean.stride() == expected.stride()
    assert torch.equal(lean, expected)


@pytest.mark.parametrize(("quant_min", "quant_max", "dtype"), RANGES)
@pytest.mark.parametrize("scale", [0.5, 0.1, 1 / 3, 2.0**-10])
def test_per_tensor_matches_the_op(quant_min, quant_max, dtype, scale):
    w = _weight(0)
    args = (w, scale, 3 if quant_min < 0 else 128, quant_min, quant_max, dtype)
    _assert_same(
        quantize_constant(qdq_ops.QUANTIZE_PER_TENSOR, args, {}), qdq_ops.QUANTIZE_PER_TENSOR(*args)
    )


@pytest.mark.parametrize(("quant_min", "quant_max", "dtype"), RANGES)
@pytest.mark.parametrize("axis", [0, 1, 3, -1])
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_per_channel_matches_the_op(quant_min, quant_max, dtype, axis, scale_dtype, transposed):
    w = _weight(axis + 7)
    if transposed:  # a non-contiguous weight, as after aten.t / permute
        w = w.transpose(0, 1)
    channels = w.shape[axis]
    g = torch.Generator().manual_seed(1)
    scales = (torch.rand(channels, generator=g) * 0.2 + 1e-3).to(scale_dtype)
    zero_points = torch.randint(-3, 4, (channels,), generator=g)
    if quant_min >= 0:
        zero_points += 128
    args = (w, scales, zero_points, axis, quant_min, quant_max, dtype)
    _assert_same(
        quantize_constant(qdq_ops.QUANTIZE_PER_CHANNEL, args, {}),
        qdq_ops.QUANTIZE_PER_CHANNEL(*args),
    )


def test_inputs_the_in_place_form_would_change_go_back_to_the_op():
    w = _weight(3)
    scales, zero_points = torch.full((6,), 0.1), torch.zeros(6, dtype=torch.int64)
    per_channel = qdq_ops.QUANTIZE_PER_CHANNEL
    # float64 zero points would widen the out-of-place sum; half inputs are upcast by the op
    assert (
        quantize_constant(
            per_channel, (w, scales, zero_points.double(), 0, -128, 127, torch.int8), {}
        )
        is None
    )
    assert (
        quantize_constant(
            qdq_ops.QUANTIZE_PER_TENSOR, (w.half(), 0.1, 0, -128, 127, torch.int8), {}
        )
        is None
    )
    # a range the dtype cannot hold, an axis that does not exist: the op raises its own error
    assert (
        quantize_constant(per_channel, (w, scales, zero_points, 0, -128, 300, torch.int8), {})
        is None
    )
    assert (
        quantize_constant(per_channel, (w, scales, zero_points, 4, -128, 127, torch.int8), {})
        is None
    )
    # keyword arguments and other ops are not handled here
    assert (
        quantize_constant(
            per_channel, (w, scales, zero_points, 0, -128, 127), {"dtype": torch.int8}
        )
        is None
    )
    assert (
        quantize_constant(qdq_ops.DEQUANTIZE_PER_TENSOR, (w, 0.1, 0, -128, 127, torch.int8), {})
        is None
    )


def test_the_weight_itself_is_never_written():
    w = _weight(5)
    before = w.clone()
    quantize_constant(qdq_ops.QUANTIZE_PER_TENSOR, (w, 0.1, 0, -128, 127, torch.int8), {})
    quantize_constant(
        qdq_ops.QUANTIZE_PER_CHANNEL,
        (w, torch.full((6,), 0.1), torch.zeros(6, dtype=torch.int64), 0, -128, 127, torch.int8),
        {},
    )
    assert torch.equal(w, before)


GROUP_RANGES = [(-8, 7, torch.int8), (-128, 127, torch.int8), (0, 15, torch.uint8)]


@pytest.mark.parametrize(("quant_min", "quant_max", "dtype"), GROUP_RANGES)
@pytest.mark.parametrize("group_size", [2, 16, 32, 64])
@pytest.mark.parametrize("zero_dtype", [torch.int8, torch.int64, torch.float32])
def test_per_channel_group_matches_the_op(quant_min, quant_max, dtype, group_size, zero_dtype):
    """The group op adds the zero point before rounding; ties and float zero points included."""
    w = _weight(group_size, shape=(8, 64))
    g = torch.Generator().manual_seed(group_size)
    scales = torch.rand(8, 64 // group_size, generator=g) * 0.3 + 0.01
    zero_points = torch.randint(-2, 3, scales.shape, generator=g).to(zero_dtype)
    if quant_min >= 0:
        zero_points = zero_points + 8
    if zero_dtype.is_floating_point:
        zero_points = zero_points + 0.5  # a tie before rounding
    args = (w, scales, zero_points, quant_min, quant_max, dtype, group_size)
    op = qdq_ops.QUANTIZE_PER_CHANNEL_GROUP
    _assert_same(quantize_constant(op, args, {}), op(*args))


def test_per_channel_group_declines_what_the_op_refuses():
    op = qdq_ops.QUANTIZE_PER_CHANNEL_GROUP
    w = _weight(9, shape=(4, 32))
    scales, zero_points = torch.full((4, 1), 0.1), torch.zeros(4, 1, dtype=torch.int8)
    nan = w.clone()
    nan[0, 0] = float("nan")
    assert quantize_constant(op, (nan, scales, zero_points, -8, 7, torch.int8, 32), {}) is None
    assert quantize_constant(op, (w, scales, zero_points, -8, 7, torch.int8, 1), {}) is None
    bad_groups = (w, torch.full((4, 3), 0.1), torch.zeros(4, 3), -8, 7, torch.int8, 12)
    assert quantize_constant(op, bad_groups, {}) is None
    assert (
        quantize_constant(op, (w.reshape(2, 2, 32), scales, zero_points, -8, 7, torch.int8, 32), {})
        is None
    )


@pytest.mark.parametrize("block_elements", [1, 7, 64, 1 << 18])
@pytest.mark.parametrize("zero_point", [0, 2])
@pytest.mark.parametrize("axis", [0, 1])
def test_weights_spanning_many_blocks_match_the_op(monkeypatch, block_elements, zero_point, axis):
    """Blocks of rows (a block smaller than a row, ragged last blocks, one block for all),
    with per-row qparams sliced per block; all-zero zero points skip the add exactly."""
    monkeypatch.setattr(constant_quantize, "BLOCK_ELEMENTS", block_elements)
    w = _weight(11, shape=(37, 12))
    w.view(-1)[8:12] = torch.tensor([-0.0, 2.5, -3.5, 0.0])  # signed zeros, ties
    channels = w.shape[axis]
    scales = torch.linspace(0.05, 0.5, channels)
    zero_points = torch.full((channels,), zero_point, dtype=torch.int64)
    group_scales = torch.linspace(0.05, 0.5, 37 * 3).reshape(37, 3)
    group_zeros = torch.full((37, 3), zero_point, dtype=torch.int8)
    for op, args in (
        (qdq_ops.QUANTIZE_PER_TENSOR, (w, 0.1, zero_point, -128, 127, torch.int8)),
        (qdq_ops.QUANTIZE_PER_CHANNEL, (w, scales, zero_points, axis, -127, 127, torch.int8)),
        (qdq_ops.QUANTIZE_PER_CHANNEL_GROUP, (w, group_scales, group_zeros, -8, 7, torch.int8, 4)),
    ):
        _assert_same(quantize_constant(op, args, {}), op(*args))


def test_one_scratch_block_serves_every_weight():
    """A fold quantizing many weights reuses one float block (a block per weight fragments
    the heap between the integer results); it grows only for a row longer than a block."""
    scratch = constant_quantize.BlockScratch()
    storages = set()
    for rows, columns in ((64, 32), (16, 128), (3, 7)):
        w = _weight(rows, shape=(rows, columns))
        scales = torch.full((rows,), 0.05)
        args = (w, scales, torch.zeros(rows, dtype=torch.int64), 0, -127, 127, torch.int8)
        op = qdq_ops.QUANTIZE_PER_CHANNEL
        _assert_same(quantize_constant(op, args, {}, scratch), op(*args))
        storages.add(scratch.block((1,), torch.float32).untyped_storage().data_ptr())
    assert len(storages) == 1
    wide = scratch.block((2, constant_quantize.BLOCK_ELEMENTS), torch.float32)
    assert wide.shape == (2, constant_quantize.BLOCK_ELEMENTS)
