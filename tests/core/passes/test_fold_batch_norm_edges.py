"""BatchNorm folding with tensors the fold cannot read: they must keep the batch norm in place.

Folding bakes the conv bias and the batch norm's affine parameters into new constants. When
one of them is a model input rather than a module tensor, its value is unknown at prepare
time; folding anyway would silently drop it from the arithmetic and change the model's output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.fold_batch_norm import BatchNormNotFoldedWarning, fold_batch_norm

aten = torch.ops.aten


def _batch_norms(gm: torch.fx.GraphModule) -> int:
    return sum(n.target is aten.batch_norm.default for n in gm.graph.nodes)


def _random_statistics(bn: nn.BatchNorm2d) -> nn.BatchNorm2d:
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


class ConvWithInputBias(nn.Module):
    """conv2d(x, self.weight, bias) -> bn, where ``bias`` is a forward argument."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3, 1, 1))
        self.bn = _random_statistics(nn.BatchNorm2d(2))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.bn(nn.functional.conv2d(x, self.weight, bias))


class BatchNormWithInputScale(nn.Module):
    """conv -> batch_norm whose gamma is a forward argument (running stats are buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.register_buffer("mean", torch.rand(2))
        self.register_buffer("var", torch.rand(2) + 0.5)
        self.beta = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return nn.functional.batch_norm(y, self.mean, self.var, gamma, self.beta, False)


@pytest.mark.parametrize(
    ("model", "second", "reason"),
    [
        (ConvWithInputBias, torch.randn(2), "bias of"),
        (BatchNormWithInputScale, torch.rand(2) + 0.5, "affine parameters"),
    ],
    ids=["conv_bias_input", "batch_norm_gamma_input"],
)
def test_batch_norm_with_an_input_tensor_is_kept_with_a_warning(model, second, reason):
    """A conv bias or batch-norm gamma passed to forward is not a module constant: the batch
    norm stays (with a warning naming why) and the output for any value of it is unchanged."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4)
    gm = torch.export.export(model().eval(), (x, second)).module()
    other = second * 3 + 1  # a runtime value unlike the export example
    expected = gm(x, other)
    with pytest.warns(BatchNormNotFoldedWarning, match=reason):
        assert run_pass(gm, fold_batch_norm) is False
    assert _batch_norms(gm) == 1
    torch.testing.assert_close(gm(x, other), expected, rtol=0, atol=0)


class ReadsBatchCounter(nn.Module):
    """conv -> bn (exported in training mode) whose output is scaled by num_batches_tracked."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.bn = _random_statistics(nn.BatchNorm2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) * self.bn.num_batches_tracked


def test_batch_counter_increment_that_is_read_survives_folding():
    """Folding drops a folded batch norm's ``num_batches_tracked += 1`` only when nothing reads
    its result; a model that reads the counter keeps the increment and still runs."""
    torch.manual_seed(0)
    model, x = ReadsBatchCounter(), torch.randn(1, 3, 4, 4)
    gm = torch.export.export(model.train(), (x,)).module()
    (increment,) = [n for n in gm.graph.nodes if n.target is aten.add_.Tensor]
    assert increment.users  # the case under test
    with pytest.warns(UserWarning, match="training mode"):
        assert run_pass(gm, fold_batch_norm) is True
    assert _batch_norms(gm) == 0
    assert [n.target for n in gm.graph.nodes].count(aten.add_.Tensor) == 1
    counter = gm.bn.num_batches_tracked.item()
    expected = model.eval().bn(model.conv(x)) * (counter + 1)
    torch.testing.assert_close(gm(x), expected, rtol=1e-5, atol=1e-5)


class AtenTransposedConvolution(nn.Module):
    """aten.convolution(..., transposed=True) -> bn: a transposed conv spelled as the generic op,
    whose (in, out, k, k) weight holds the output channels in dim 1."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 4, 2, 2))
        self.bias = nn.Parameter(torch.randn(4))
        self.bn = _random_statistics(nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = aten.convolution.default(
            x, self.weight, self.bias, [1, 1], [0, 0], [1, 1], True, [0, 0], 1
        )
        return self.bn(y)


def test_generic_convolution_with_transposed_flag_folds_along_dim_1():
    """The fold scales a transposed conv's weight along dim 1 even when export records it as
    ``aten.convolution`` with ``transposed=True``; scaling dim 0 would give wrong outputs."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 4)
    gm = torch.export.export(AtenTransposedConvolution().eval(), (x,)).module()
    expected = gm(x)
    assert run_pass(gm, fold_batch_norm) is True
    assert _batch_norms(gm) == 0
    torch.testing.assert_close(gm(x), expected, rtol=1e-5, atol=1e-5)
