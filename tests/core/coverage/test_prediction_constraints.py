"""explain()'s backend predictions for ops that break a backend constraint.

XNNPACK's partitioner takes an add / cat / max_pool2d / mean only under per-op conditions
(module docstring of :mod:`quantizers.xnnpack.delegation`); an op that breaks one is not
delegated at all, quantized or not, and the report must say so rather than promise an int8 or
fp32 kernel (``tests/quantizers/xnnpack/test_delegation_against_lowering.py`` checks the same
models against real lowering). On x86, conv1d prepacks into a oneDNN qconv just like conv2d.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.ptq import explain_quantized


class ConvThen(nn.Module):
    """x ─ conv(1x1) ─ tail(y, x) ─ out, with a second conv the tail may use on x."""

    def __init__(self, tail: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.other = nn.Conv2d(3, 4, 1)
        self.tail = tail

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self, self.conv(x), x)


TAILS = {
    "add": lambda m, y, x: torch.add(y, m.other(x), alpha=2),  # XNNPACK needs alpha == 1
    "cat": lambda m, y, x: torch.cat([y], 1),  # needs at least two inputs
    "max_pool2d": lambda m, y, x: F.max_pool2d(y, 2, stride=3),  # needs stride <= kernel
    "mean": lambda m, y, x: y.mean((2, 3)),  # needs keepdim
}


@pytest.mark.parametrize("op", TAILS)
def test_quantized_op_breaking_an_xnnpack_constraint_is_not_delegated(op: str) -> None:
    """The op is quantized (q/dq around it) yet XNNPACK rejects it in every precision:
    predicting "xnnpack int8" or "xnnpack fp32" would hide a round trip out of the delegate."""
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    report = explain_quantized(ConvThen(TAILS[op]), (torch.randn(1, 3, 4, 4),), quantizer)
    (row,) = [r for r in report.rows if r.op == op]
    assert (row.quantized, row.prediction) == (True, "not delegated")
    assert report.rows[0].prediction == "xnnpack int8"  # the conv before it still is int8


def test_max_pool_in_ceil_mode_on_static_shapes_is_predicted_int8() -> None:
    """ExecuTorch 1.5.1 pads for ceil_mode when shapes are static, so it stays int8."""
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    tail = lambda m, y, x: F.max_pool2d(y, 3, stride=2, ceil_mode=True)  # noqa: E731
    report = explain_quantized(ConvThen(tail), (torch.randn(1, 3, 4, 4),), quantizer)
    assert [(r.op, r.prediction) for r in report.rows] == [
        ("conv2d", "xnnpack int8"),
        ("max_pool2d", "xnnpack int8"),
    ]


def test_x86_conv1d_is_predicted_as_an_int8_qconv() -> None:
    """Inductor's prepack pattern covers 3-D (conv1d) inputs as well as 4-D ones, so a
    quantized conv1d is reported as the int8 kernel it becomes."""
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    report = explain_quantized(nn.Conv1d(3, 4, 1), (torch.randn(1, 3, 8),), quantizer)
    assert [(r.op, r.quantized, r.prediction) for r in report.rows] == [
        ("conv1d", True, "int8 qconv")
    ]


def test_quantized_mean_meeting_the_constraint_is_predicted_int8() -> None:
    """A 4-D mean over dims 2, 3 with keepdim is XNNPACK's int8 MeanDim. The check reads the
    input's shape behind its dequantize (q/dq nodes carry no example value of their own)."""
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    tail = lambda m, y, x: y.mean((2, 3), keepdim=True)  # noqa: E731
    report = explain_quantized(ConvThen(tail), (torch.randn(1, 3, 4, 4),), quantizer)
    assert [(r.op, r.quantized, r.prediction) for r in report.rows] == [
        ("conv2d", True, "xnnpack int8"),
        ("mean", True, "xnnpack int8"),
    ]


class ConvPoolConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(3, 4, 1)
        self.pool = nn.MaxPool2d(1)
        self.second = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.pool(self.first(x)))


def test_an_op_left_float_between_a_dq_and_a_q_is_predicted_int8() -> None:
    """The partitioner reads the graph, not the annotations: a max-pool scoped out of
    quantization but reading the first conv's dq and feeding the second conv's q still runs
    as XNNPACK's int8 max-pool, so the report must not promise fp32 there."""
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    quantizer.set_module_name("pool", None)
    report = explain_quantized(ConvPoolConv(), (torch.randn(1, 3, 4, 4),), quantizer)
    (pool,) = [r for r in report.rows if r.op == "max_pool2d"]
    assert (pool.quantized, pool.prediction) == (False, "xnnpack int8")
