"""convert_pt2e rewrites the graph and folds constants, but runs none of the model's own ops.

A forward that updates a buffer in place (a running counter, a decaying scale) must see that
update once per call the user makes. torchao's convert re-runs such an update while folding
constants, so the buffer has moved once more when convert returns; ours leaves it where
calibration left it.
"""

from __future__ import annotations

import torch
from torch import nn

from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config
from tests.ptq import quantize_once


class DecayingBias(nn.Module):
    """linear(x) + buf, halving ``buf`` in place on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.register_buffer("buf", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.buf.mul_(0.5)
        return self.linear(x) + self.buf


def test_buffer_updated_in_place_moves_only_when_the_model_runs() -> None:
    x = torch.randn(2, 4)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    converted = quantize_once(DecayingBias().eval(), (x,), quantizer)
    assert torch.equal(converted.buf, torch.full((4,), 0.5))  # one calibration call
    converted(x)
    assert torch.equal(converted.buf, torch.full((4,), 0.25))
