"""A buffer the model updates in place keeps updating after convert, as with torchao.

``convert_pt2e(fold_quantize=True)`` stores quantized weights as constants; a module tensor the
graph writes is not a weight, and folding its quantize would freeze the value it had at convert
time. torchao's constant folding skips buffers written by ``copy_``, which is how
``run_decompositions`` spells an in-place buffer update; the same annotation through both
pipelines must give the same graph and the same outputs on every call.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from tests.graph_check import qdq_and_compute_ops
from tests.peer_annotation import library, make_int8_quantizer

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")


class DecayingState(nn.Module):
    """state = state / 2 + x; return linear(state): the state buffer is read by a mul and
    written back by ``copy_`` once decomposed."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("state", torch.zeros(4, 4))
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state.mul_(0.5)
        self.state.add_(x)
        return self.linear(self.state)


def _converted(lib_name: str, model: nn.Module, batches: list[torch.Tensor]):
    lib = library(lib_name)
    program = torch.export.export(copy.deepcopy(model), (batches[0],)).run_decompositions()
    prepared = lib.prepare_pt2e(program.module(), make_int8_quantizer(lib))
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return lib.convert_pt2e(prepared, fold_quantize=True)


def test_buffer_updated_in_place_keeps_updating_after_convert():
    torch.manual_seed(0)
    model = DecayingState()
    batches = [torch.randn(4, 4) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _converted("torchao", model, batches)
        ours = _converted("pt2e_quant", model, batches)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    with torch.no_grad():
        for x in batches:  # each call reads the state the previous one left
            assert torch.equal(ours(x), theirs(x))
    assert torch.equal(ours.state, theirs.state)
