"""quantize()'s export-failure message: the suggested fix depends on ``dynamic_shapes``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from pt2e_quant.quantize_model import ExportFailedError, quantize


class Raises(nn.Module):
    """forward raises a plain error that says nothing about shapes or data-dependence."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("this model cannot run")


@pytest.mark.parametrize(
    ("dynamic_shapes", "fix"),
    [
        (None, "likely fix: if input sizes vary, pass dynamic_shapes"),
        ({"x": None}, "likely fix: check example_inputs and dynamic_shapes match forward()"),
    ],
)
def test_fix_suggests_dynamic_shapes_only_when_none_were_given(dynamic_shapes, fix) -> None:
    """Without dynamic_shapes the user is told they may need them; with them, to check them
    against forward(). Swapping the two would send users after the wrong argument."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportFailedError, match="RuntimeError: this model cannot run") as info:
            quantize(
                Raises(),
                (torch.randn(2, 4),),
                backend="xnnpack",
                dynamic_shapes=dynamic_shapes,
                progress=False,
            )
    assert fix in str(info.value)
    assert "strict=True" not in str(info.value)  # non-strict already: no advice to switch
