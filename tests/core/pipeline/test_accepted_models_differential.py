"""Models prepare accepts as torchao does, checked against torchao's prepare/convert.

Three kinds of graph used to be refused: a model whose own ``forward`` calls q/dq ops, a
parent holding a submodule converted earlier (quantize parts, then the whole), and a
``torch.fx.symbolic_trace`` result. torchao accepts all three.

* q/dq in ``forward`` that enclose no op are ordinary ops in both: same q/dq sequence, same bits.
* Re-entrant: torchao observes the converted part's q/dq again (a second q/dq on each value,
  its int8 weight re-quantized from the dequantized values), so its result differs from
  quantizing the whole at once. Ours leaves the part as it is, which makes "part, then whole"
  bit-identical to torchao quantizing the whole model at once.
* symbolic_trace: backend rules match aten ops, a traced graph calls modules, so neither
  library annotates anything. (torchao's convert then crashes on the traced conv module with
  ``AttributeError: 'Conv2d' object has no attribute 'qconfig'``; ours returns the model float
  with a ``NothingToConvertWarning``.)
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.ops import qdq_ops
from pt2e_quant.pipeline import model_checks
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.pipeline._edge_case_peers import PEER_BACKENDS, peer_pipeline
from tests.core.pipeline._edge_case_pipeline import QUANTIZERS, Q, all_equal, quiet, run_pipeline
from tests.graph_check import count_ops, qdq_and_compute_ops, quantized_edges
from tests.models.reentrant import (
    FakeQuantizedExtraInput,
    HeadThenPart,
    LinearRelu,
    calibrate_and_convert,
    export,
)

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")


@pytest.mark.parametrize("backend", PEER_BACKENDS)
def test_q_dq_written_in_forward_are_ordinary_ops(backend: str) -> None:
    """The add reads the model's own dq like any float value: observed, quantized again."""
    torch.manual_seed(0)
    example = (torch.randn(2, 4), torch.randn(2, 4))
    gm = export(FakeQuantizedExtraInput(), *example)
    pipeline, peer = peer_pipeline(backend)
    with quiet():
        theirs = calibrate_and_convert(
            pipeline.prepare_pt2e(copy.deepcopy(gm), peer), pipeline.convert_pt2e, *example
        )
        ours = run_pipeline(gm, QUANTIZERS[backend](), [example])
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    own_scales = [n.args[1] for n in ours.graph.nodes if n.target == Q and n.args[1] == 0.05]
    assert own_scales == [0.05]  # the model's own q stays as it wrote it
    assert all_equal(ours(*example), theirs(*example))


def _part_then_whole(backend: str, float_model: HeadThenPart, x: torch.Tensor):
    """Convert the model's LinearRelu on its own (calibrated on head(x)), put it back behind
    the float head, and export the parent: what prepare gets in "the part, then the whole"."""
    head = float_model.head
    h = head(x).detach()
    part_gm = export(copy.deepcopy(float_model.part), h)
    part = run_pipeline(part_gm, QUANTIZERS[backend](), [(h,)])
    return part, export(HeadThenPart(part, head), x)


@pytest.mark.parametrize("backend", PEER_BACKENDS)
def test_part_then_whole_equals_torchao_quantizing_the_whole_at_once(backend: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    float_model = HeadThenPart(LinearRelu())
    pipeline, peer = peer_pipeline(backend)
    with quiet():
        theirs = calibrate_and_convert(
            pipeline.prepare_pt2e(export(copy.deepcopy(float_model), x), peer),
            pipeline.convert_pt2e,
            x,
        )
        _, parent = _part_then_whole(backend, float_model, x)
        ours = run_pipeline(parent, QUANTIZERS[backend](), [(x,)])
    # order-blind: the re-exported part's weight dequantize sits at the part's call
    assert quantized_edges(ours) == quantized_edges(theirs)
    assert all_equal(ours(x), theirs(x))


@pytest.mark.executorch
def test_torchao_quantizes_a_converted_part_again() -> None:
    """Why ours differs from torchao on the same re-entrant flow: torchao observes the part's
    dq outputs and its dequantized weight, adding a q/dq pair after each of them."""
    torch.manual_seed(0)
    x = torch.randn(8, 4)
    with quiet():
        part, parent = _part_then_whole("xnnpack", HeadThenPart(LinearRelu()), x)
        pipeline, peer = peer_pipeline("xnnpack")
        theirs = calibrate_and_convert(
            pipeline.prepare_pt2e(copy.deepcopy(parent), peer), pipeline.convert_pt2e, x
        )
        ours = run_pipeline(parent, QUANTIZERS["xnnpack"](), [(x,)])
    part_qs = count_ops(part)[Q]
    assert count_ops(ours)[Q] == part_qs + 1  # the head's input; its output is the part's q
    assert count_ops(theirs)[Q] > count_ops(ours)[Q]
    assert count_ops(theirs)[qdq_ops.QUANTIZE_PER_CHANNEL] == 1  # the part's int8 weight


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
