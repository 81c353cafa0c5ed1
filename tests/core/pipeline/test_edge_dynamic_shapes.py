"""Edge case: models exported with dynamic shapes, through both real backends.

Calibration and inference at sizes other than the example inputs are where a pass that
bakes in a concrete shape (an observer buffer, a reshape, a specialized guard) would break.
These tests pin that the dims stay symbolic through prepare, convert, re-export and
torch.export.save / load, and that the result matches the peers (ExecuTorch's XNNPACK,
torchao's X86) bit for bit.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.export import Dim

from tests.core.pipeline._edge_case_peers import (
    PEER_BACKENDS,
    calibrated,
    peer_pipeline,
)
from tests.core.pipeline._edge_case_pipeline import (
    QUANTIZERS,
    Q,
    all_equal,
    quiet,
    run_pipeline,
    sqnr,
)
from tests.graph_check import qdq_and_compute_ops
from tests.models import ZOO


def _transformer_case() -> tuple[nn.Module, tuple, tuple, list, list]:
    """Transformer with a dynamic batch and sequence length: calibrate at (3, 5) and (1, 9),
    run at (4, 7) and (1, 2)."""
    torch.manual_seed(0)
    model = ZOO["transformer_encoder"]().eval()
    dims = ({0: Dim("batch", min=1, max=16), 1: Dim("seq", min=2, max=32)},)
    calibration = [(torch.randn(3, 5, 16),), (torch.randn(1, 9, 16),)]
    tests = [(torch.randn(4, 7, 16),), (torch.randn(1, 2, 16),)]
    return model, model.example_inputs(), dims, calibration, tests


def _conv_case() -> tuple[nn.Module, tuple, tuple, list, list]:
    """MobileNetV2 block with a dynamic batch (example batch 2: a batch of 1 would make
    export specialize the dimension)."""
    torch.manual_seed(0)
    model = ZOO["mobilenet_v2_block"]().eval()
    shape = model.example_inputs()[0].shape[1:]
    dims = ({0: Dim("batch", min=1, max=8)},)
    calibration = [(torch.randn(3, *shape),), (torch.randn(1, *shape),)]
    return model, (torch.randn(2, *shape),), dims, calibration, [(torch.randn(5, *shape),)]


DYNAMIC_CASES = {"transformer": _transformer_case, "mobilenet_v2_block": _conv_case}


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
@pytest.mark.parametrize("case", sorted(DYNAMIC_CASES))
def test_dynamic_shapes_survive_prepare_convert_reexport_and_save(case: str, backend) -> None:
    """Calibrate at several sizes, run at others, re-export with the same dynamic_shapes and
    round-trip through torch.export.save / load: the dims stay symbolic throughout."""
    model, example, dims, calibration, tests = DYNAMIC_CASES[case]()
    gm = torch.export.export(model, example, dynamic_shapes=dims).module()
    with quiet():
        converted = run_pipeline(gm, QUANTIZERS[backend](), calibration)
    assert sum(n.target is Q for n in converted.graph.nodes) > 0
    with torch.no_grad():
        outputs = [converted(*batch) for batch in tests]
    for out, batch in zip(outputs, tests, strict=True):
        assert out.shape == model(*batch).shape
        assert sqnr(out, model(*batch)) > 15
    program = torch.export.export(converted, example, dynamic_shapes=dims)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with torch.no_grad():
        assert all(torch.equal(loaded(*b), out) for b, out in zip(tests, outputs, strict=True))


@pytest.mark.parametrize("backend", PEER_BACKENDS)
@pytest.mark.parametrize("case", sorted(DYNAMIC_CASES))
def test_dynamic_shapes_match_the_peer_bit_for_bit(case: str, backend: str) -> None:
    model, example, dims, calibration, tests = DYNAMIC_CASES[case]()
    gm = torch.export.export(model, example, dynamic_shapes=dims).module()
    peer, peer_quantizer = peer_pipeline(backend)
    with quiet():
        theirs = peer.convert_pt2e(
            calibrated(peer.prepare_pt2e(copy.deepcopy(gm), peer_quantizer), calibration)
        )
        ours = run_pipeline(gm, QUANTIZERS[backend](), calibration)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    with torch.no_grad():
        assert all(all_equal(ours(*b), theirs(*b)) for b in tests)
