"""Models prepare accepts as torchao does, checked against torchao's prepare/convert.

A ``torch.fx.symbolic_trace`` result used to be refused; torchao accepts any GraphModule.
Backend rules match aten ops and a traced graph calls modules, so neither library annotates
anything. (torchao's convert then crashes on the traced conv module with
``AttributeError: 'Conv2d' object has no attribute 'qconfig'``; ours returns the model float
with a ``NothingToConvertWarning``.)
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, model_checks, prepare_pt2e, prepare_qat_pt2e
from quantizers.x86_inductor import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core._edge_case_peers import PEER_BACKENDS, peer_pipeline
from tests.core._edge_case_pipeline import QUANTIZERS, quiet

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")


class ConvThenLinear(nn.Module):
    """x ─ conv ─ relu ─ mean(2, 3) ─ linear, called as modules (what symbolic_trace keeps)"""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.relu(self.conv(x)).mean((2, 3)))


def _prepare_fns(backend: str, qat: bool):
    """(torchao's prepare, the peer quantizer, our prepare, our quantizer) for PTQ or QAT."""
    import importlib

    pipeline, peer = peer_pipeline(backend)  # imports the peers without their side effects
    if not qat:
        return pipeline.prepare_pt2e, peer, prepare_pt2e, QUANTIZERS[backend]()
    if backend == "xnnpack":
        module = importlib.import_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        peer = module.XNNPACKQuantizer().set_global(
            module.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        )
        ours = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        )
    else:
        module = importlib.import_module(
            "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"
        )
        peer = module.X86InductorQuantizer().set_global(
            module.get_default_x86_inductor_quantization_config(is_qat=True)
        )
        ours = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config(is_qat=True)
        )
    return pipeline.prepare_qat_pt2e, peer, prepare_qat_pt2e, ours


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
@pytest.mark.parametrize("backend", PEER_BACKENDS)
def test_a_symbolic_trace_gets_nothing_annotated_as_in_torchao(backend: str, qat: bool) -> None:
    torch.manual_seed(0)
    model = ConvThenLinear().train(qat)
    x = torch.randn(1, 3, 6, 6)
    theirs_prepare, peer, ours_prepare, quantizer = _prepare_fns(backend, qat)
    with quiet():
        theirs = theirs_prepare(torch.fx.symbolic_trace(copy.deepcopy(model)), peer)
    with pytest.warns(model_checks.NotExportedGraphWarning, match="ConvThenLinear"):
        ours = ours_prepare(torch.fx.symbolic_trace(copy.deepcopy(model)), quantizer)
    assert [n.format_node() for n in ours.graph.nodes] == [
        n.format_node() for n in theirs.graph.nodes
    ]  # no observer in either
    assert torch.equal(ours(x), theirs(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = convert_pt2e(ours)
    assert [type(w.message) for w in caught] == [model_checks.NothingToConvertWarning]
    assert torch.equal(converted(x), model(x))
