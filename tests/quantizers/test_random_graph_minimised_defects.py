"""Seeds where the random-graph differential found our defects, minimised to a few ops.

A random seed is a poor bug report: it carries ops that have nothing to do with the failure and
needs the peers installed. Each defect the differential found (``FIXED_DEFECTS`` in
test_random_graph_matches_peers.py) is also kept here as the smallest model that shows it,
checked against float eager execution alone, so it runs without torchao or ExecuTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers.xnnpack.quantizer import XNNPACKQuantizer


class InplaceAfterEvalDropout(nn.Module):
    """Minimal model of seed 160::

    a = x * 2 ─ dropout(eval) ─ hardtanh_ ─┐   (eval dropout returns ``a`` itself,
              └─────────────────────────── mul   so hardtanh_ clamps ``a`` in place)
    """

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = F.dropout(a, 0.5, training=False)
        F.hardtanh_(b)
        return b * a


def test_minimal_inplace_after_eval_dropout() -> None:
    """Needs no peer: prepare alone (nothing annotated) must not change the float result
    (the FIXED_DEFECTS seed, minimised)."""
    from pt2e_quant import prepare_pt2e

    x = torch.linspace(-3, 3, 8)
    model = InplaceAfterEvalDropout().eval()
    exported = torch.export.export(model, (x,)).module()
    assert torch.equal(exported(x), model(x))
    prepared = prepare_pt2e(exported, XNNPACKQuantizer().set_global(None))
    assert torch.equal(prepared(x), model(x))
