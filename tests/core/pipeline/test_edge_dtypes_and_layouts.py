"""Edge case: half-precision and channels-last models, through both real backends.

Observers and q/dq ops compute in float32, so a float16 / bfloat16 model needs casts in the
right places to come back in its own dtype; a channels-last input must not change a single
qparam. These tests pin both, and that the half-precision result equals ExecuTorch's bit for
bit.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.core.pipeline._edge_case_peers import calibrated, peer_pipeline
from tests.core.pipeline._edge_case_pipeline import (
    QUANTIZERS,
    Q,
    close_within,
    quiet,
    run_pipeline,
    xnnpack_quantizer,
)
from tests.graph_check import qdq_and_compute_ops
from tests.models.edge_cases import ConvBatchNormDropout


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_half_precision_models_quantize_and_keep_their_dtype(backend, dtype) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval().to(dtype)
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    gm = torch.export.export(model, (x,)).module()
    with quiet():
        converted = run_pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert any(n.target is Q for n in converted.graph.nodes)
    out = converted(x)
    assert out.dtype == dtype
    assert close_within(out, model(x), atol=0.05)


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_matches_executorch_bit_for_bit(dtype) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval().to(dtype)
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    gm = torch.export.export(model, (x,)).module()
    peer, peer_quantizer = peer_pipeline("xnnpack")
    with quiet():
        theirs = peer.convert_pt2e(
            calibrated(peer.prepare_pt2e(copy.deepcopy(gm), peer_quantizer), [(x,)])
        )
        ours = run_pipeline(gm, xnnpack_quantizer(), [(x,)])
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_channels_last_gives_the_same_model_as_contiguous(backend: str) -> None:
    """Exported and calibrated on channels_last: same qparams and outputs as contiguous."""
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval()
    x = torch.randn(2, 3, 8, 8)
    x_cl = x.to(memory_format=torch.channels_last)
    with quiet():
        cl = run_pipeline(
            torch.export.export(model, (x_cl,)).module(), QUANTIZERS[backend](), [(x_cl,)]
        )
        plain = run_pipeline(
            torch.export.export(model, (x,)).module(), QUANTIZERS[backend](), [(x,)]
        )
    assert torch.equal(cl(x_cl), plain(x))
    assert torch.equal(cl(x), cl(x_cl))
