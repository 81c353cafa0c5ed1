"""move_exported_model_to_eval / _to_train against torchao's, on the spellings torchao covers.

torchao rewrites ``F.dropout`` (in-place or not) and ``F.batch_norm`` patterns; on those, an
exported model switched by either library must compute the same thing. (The spellings torchao
misses, such as ``feature_dropout``, are checked against the eager model in
``test_train_eval_ops.py``.)
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import pt2e_quant

pytestmark = pytest.mark.torchao
torchao_pt2e = pytest.importorskip("torchao.quantization.pt2e")


class LinearInplaceDropoutBatchNorm(nn.Module):
    """x -> linear -> dropout (inplace) -> batch_norm1d."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.dropout = nn.Dropout(0.5, inplace=True)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.dropout(self.linear(x)))


@pytest.mark.parametrize("inplace", [True, False], ids=["dropout_", "dropout"])
def test_exported_training_dropout_moved_to_eval_as_torchao(inplace: bool) -> None:
    torch.manual_seed(0)
    model = LinearInplaceDropoutBatchNorm()
    model.dropout.inplace = inplace
    x = torch.randn(4, 8)
    exported = torch.export.export(model.train(), (x,)).module()
    ours = pt2e_quant.move_exported_model_to_eval(copy.deepcopy(exported))
    theirs = torchao_pt2e.move_exported_model_to_eval(copy.deepcopy(exported))
    expected = theirs(x)
    for _ in range(3):  # no random draw left: every call computes the same
        assert torch.equal(ours(x), expected)
    torch.testing.assert_close(expected, model.eval()(x), rtol=0, atol=0)


def test_exported_eval_dropout_moved_to_train_as_torchao() -> None:
    torch.manual_seed(0)
    model = LinearInplaceDropoutBatchNorm().eval()
    x = torch.randn(4, 8)
    exported = torch.export.export(model, (x,)).module()
    ours = pt2e_quant.move_exported_model_to_train(copy.deepcopy(exported))
    theirs = torchao_pt2e.move_exported_model_to_train(copy.deepcopy(exported))
    torch.manual_seed(1)
    expected = theirs(x)
    torch.manual_seed(1)
    assert torch.equal(ours(x), expected)
    assert (expected == 0).any()  # dropping again
