"""XNNPACK lowering: what our XNNPACKQuantizer produces must delegate and run on ExecuTorch.

For each zoo model the converted graph is re-exported and lowered with
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])``. Two promises:

* **Delegation parity** - the lowered edge graph keeps no more undelegated ops (call_function
  nodes other than ``executorch_call_delegate`` and its ``getitem``) than the same model
  quantized by ExecuTorch's own XNNPACKQuantizer through torchao's prepare/convert. A q/dq
  pair we place where XNNPACK cannot absorb it would show up here as an extra undelegated op.
  The serialized ``.pte`` is no larger than the peer's either.
* **Runtime numerics** - the ``.pte`` run by ExecuTorch's Python runtime matches our converted
  GraphModule in units of the output's quantization step ``s`` (the scale of the dequantize that
  produces the output; for a float tail such as transformer_encoder's final LayerNorm, of the
  nearest dequantize before it). XNNPACK computes in integers (ExecuTorch quantizes the
  float bias to int32, the kernel requantizes its int32 accumulator with one fp32 multiply),
  so an element near a rounding tie may land one step away from our reference even from
  identical int8 inputs; test_xnnpack_op_numerics.py pins that per-op bound (every op within
  one of its own steps). End to end these one-step differences compound through scale
  ratios: on transformer_encoder_block 2-3 inputs in 100 end two output steps off (fc2 and
  the first residual add each one step off with the same sign, summed by the final add), all
  other outputs stay within one step, and the mean error per input is at most 0.03 s. The
  bound here is therefore every element within ``2 s`` and the mean error within ``s / 4``:
  the mean bound fails a systematically shifted output that the element-wise bound alone
  would let through.

Lowering is slow (3-17 s per model on a 2-core machine, it re-traces the graph several times),
so the matrix is trimmed with reasons rather than sampled at random:

* per-channel weights (the preset XNNPACK recommends): every zoo model;
* per-tensor weights: one block per op family (see ``PER_TENSOR_MODELS``). The composite
  models (tiny_resnet, tiny_mobilenet_v2/v3, transformer_encoder, conv_bn_relu_chain) are
  stacks of these blocks, and the weight qscheme only changes the weight's dequantize node,
  which is checked block by block.

Our lowering is computed once per (model, preset) and shared by both tests.
"""

from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor
from torch.fx import GraphModule, Node

from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.qdq_ops import is_dequantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models import ZOO
from tests.ptq import quantize_zoo_model

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: E402
    XnnpackPartitioner,
)
from executorch.exir import to_edge_transform_and_lower  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402

PRESETS = {"per_channel": {"is_per_channel": True}, "per_tensor": {}}

#: One block per op family for the per-tensor preset (module docstring says why a subset).
PER_TENSOR_MODELS = (
    "conv_transpose_decoder",  # transposed conv + bn + relu
    "mobilenet_v3_block",  # depthwise conv, hardswish, squeeze-excite mul, hardsigmoid
    "resnet_basic_block_downsample",  # conv + relu, strided 1x1 downsample, residual add
    "transformer_encoder_block",  # linear, matmul, layer norm, softmax, gelu
)

CASES = [(name, "per_channel") for name in sorted(ZOO)] + [
    (name, "per_tensor") for name in PER_TENSOR_MODELS
]

#: The ExecuTorch Python runtime ships the portable kernels only; aten::_embedding_bag.out is
#: not among them, so the method fails to load ("Missing operator"). Lowering is still compared.
NO_RUNTIME_KERNEL = {"embedding_bag": "aten::_embedding_bag.out is not in the pybindings runtime"}

#: Tolerances in output quantization steps (module docstring: measured, and why two bounds).
MAX_STEPS, MEAN_STEPS = 2.0, 0.25


@dataclass(frozen=True)
class Lowered:
    """What the tests need from one lowering: the converted model, its inputs, the ops the
    partitioner left outside the delegate, and the serialized program."""

    converted: GraphModule
    example: tuple[Tensor, ...]
    undelegated: list[str]
    pte: bytes


def fresh_like(example: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A second input of the same shapes: new floats, same integer indices."""
    return tuple(torch.randn_like(t) if t.is_floating_point() else t for t in example)


def undelegated_ops(edge_program) -> list[str]:
    """Names of the call_function nodes in the lowered graph that stayed outside XNNPACK."""
    delegate = torch.ops.higher_order.executorch_call_delegate
    names = []
    for node in edge_program.graph_module.graph.nodes:
        if node.op != "call_function" or node.target is delegate:
            continue
        if "getitem" in str(node.target):
            continue
        names.append(getattr(node.target, "__name__", str(node.target)))
    return names


def lower(converted: GraphModule, example: tuple[Tensor, ...]):
    """Re-export a converted model and hand it to the XNNPACK partitioner."""
    exported = torch.export.export(converted, example)
    return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])


def _lowered(converted: GraphModule, example: tuple[Tensor, ...]) -> Lowered:
    edge = lower(converted, example)
    undelegated = undelegated_ops(edge.exported_program())
    return Lowered(converted, example, undelegated, edge.to_executorch().buffer)


@functools.cache
def ours(name: str, preset: str) -> Lowered:
    """Our quantizer's lowering of zoo model ``name`` (cached: both tests read it)."""
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**PRESETS[preset]))
    converted, example = quantize_zoo_model(name, quantizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _lowered(converted, example)


def run_pte(pte: bytes, inputs: tuple[Tensor, ...]) -> list[Tensor]:
    """Load the serialized program in ExecuTorch's runtime and run ``forward`` once."""
    program = Runtime.get().load_program(pte)  # the method needs its program alive
    method = program.load_method("forward")
    return list(method.execute(list(inputs)))


def _nearest_dequantize(node: Node) -> Node:
    """Walk back through the first input of each op until a dequantize."""
    start = node
    while not is_dequantize(node):
        inputs = [a for a in node.args if isinstance(a, Node)]
        assert node.op == "call_function" and inputs, f"no dequantize upstream of {start}"
        node = inputs[0]
    return node


def output_steps(converted: GraphModule) -> list[float]:
    """The quantization step of each model output: the scale of the dequantize producing it,
    seen through shape ops or a float tail (e.g. a final LayerNorm)."""
    (output,) = [n for n in converted.graph.nodes if n.op == "output"]
    leaves = torch.utils._pytree.tree_leaves(output.args[0])
    return [float(_nearest_dequantize(leaf).args[1]) for leaf in leaves]


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch):
    """ExecuTorch's quantizer module, its conv-bn annotators stubbed out: they only match a
    batch norm, which prepare has already folded, but re-export their patterns on every call
    (~2 s each). The stub changes no annotation, only the time."""
    pytest.importorskip("torchao")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer, xnnpack_quantizer_utils

    for name in ("conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"):
        monkeypatch.setitem(xnnpack_quantizer_utils.OP_TO_ANNOTATOR, name, lambda *a: [])
    return xnnpack_quantizer


def _peer_lowering(peer, name: str, preset: str) -> tuple[list[str], int]:
    """(undelegated ops, .pte bytes) of the model quantized by ExecuTorch's quantizer."""
    from tests.peer_annotation import library

    torchao = library("torchao")
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    example = model.example_inputs()
    quantizer = peer.XNNPACKQuantizer().set_global(
        peer.get_symmetric_quantization_config(**PRESETS[preset])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(copy.deepcopy(model), example).module()
        prepared = torchao.prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            prepared(*example)
        converted = torchao.convert_pt2e(prepared)
        edge = lower(converted, example)
        return undelegated_ops(edge.exported_program()), len(edge.to_executorch().buffer)


@pytest.mark.torchao
@pytest.mark.parametrize(("name", "preset"), CASES)
def test_no_more_undelegated_ops_or_bytes_than_executorch_quantizer(
    peer, name: str, preset: str
) -> None:
    """Delegation parity, and a ``.pte`` no larger than the peer's: every tensor a converted
    model holds is serialized, so state a pass leaves behind (folded batch norms, shared
    observers' histograms) once made ours up to 3.5x the peer's size."""
    theirs, their_bytes = _peer_lowering(peer, name, preset)
    mine = ours(name, preset)
    assert len(mine.undelegated) <= len(theirs), (
        f"ours leaves {sorted(mine.undelegated)}, ExecuTorch's {sorted(theirs)}"
    )
    assert len(mine.pte) <= their_bytes, f".pte of {len(mine.pte)} bytes, the peer's {their_bytes}"


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_pte_matches_converted_model_within_output_steps(name: str, preset: str) -> None:
    if name in NO_RUNTIME_KERNEL:
        pytest.skip(NO_RUNTIME_KERNEL[name])
    lowered = ours(name, preset)
    torch.manual_seed(1)
    test_input = fresh_like(lowered.example)
    with torch.no_grad():
        expected = torch.utils._pytree.tree_leaves(lowered.converted(*test_input))
    actual = run_pte(lowered.pte, test_input)
    steps = output_steps(lowered.converted)
    assert len(actual) == len(expected) == len(steps)
    for got, want, step in zip(actual, expected, steps, strict=True):
        error = (got - want).abs() / step
        assert error.max() <= MAX_STEPS + 1e-3, f"max error {error.max():.3f} steps of {step:.3g}"
        assert error.mean() <= MEAN_STEPS, f"mean error {error.mean():.3f} steps of {step:.3g}"


def test_undelegated_ops_skips_the_delegate_and_its_getitems() -> None:
    """The counting helper itself: a fully delegated conv leaves nothing, and an op XNNPACK
    does not take (here a float ``aten.cumsum``) is counted."""

    class ConvCumsum(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            return torch.cumsum(self.conv(x), dim=1)

    example = (torch.randn(1, 2, 4, 4),)
    edge = lower(torch.export.export(ConvCumsum().eval(), example).module(), example)
    assert undelegated_ops(edge.exported_program()) == ["aten.cumsum.default"]


# --------------------------------------------------------------------- dynamic quantization


class DynamicLinear(torch.nn.Module):
    """x (4, 32) ─ linear(32→16) ─ out, quantized dynamically: choose_qparams on ``x`` at
    every call, int8 per-channel weights, float output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(32, 16)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


DYNAMIC = {"is_per_channel": True, "is_dynamic": True}


def _dynamic_lowering(quantizer, lib) -> tuple[GraphModule, Lowered]:
    """Quantize DynamicLinear with ``quantizer`` through ``lib``'s pipeline, then lower it."""
    torch.manual_seed(0)
    model = DynamicLinear().eval()
    example = (torch.randn(4, 32),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = lib.prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        prepared(*example)
        converted = lib.convert_pt2e(prepared)
        return converted, _lowered(converted, example)


@pytest.mark.torchao
def test_dynamic_linear_delegates_like_executorch_quantizer(peer) -> None:
    from tests.peer_annotation import library

    peer_quantizer = peer.XNNPACKQuantizer().set_global(
        peer.get_symmetric_quantization_config(**DYNAMIC)
    )
    _, theirs = _dynamic_lowering(peer_quantizer, library("torchao"))
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**DYNAMIC))
    converted, mine = _dynamic_lowering(quantizer, library("pt2e_quant"))
    assert qdq_ops.CHOOSE_QPARAMS in {n.target for n in converted.graph.nodes}
    assert len(mine.undelegated) <= len(theirs.undelegated), (
        f"ours leaves {sorted(mine.undelegated)}, ExecuTorch's {sorted(theirs.undelegated)}"
    )


def test_dynamic_linear_pte_matches_converted_model_within_activation_steps() -> None:
    """The runtime's output is within ``s * sum_k |w_ck|`` of our converted model.

    Both sides multiply the same int8 per-channel weights ``w`` (dequantized) by an int8
    copy of ``x`` quantized at call time. Ours uses one step ``s`` for the whole tensor
    (choose_qparams over ``x``, the value recomputed below); XNNPACK's dynamic kernels pick
    their own qparams over a row of ``x`` or the tensor, never a wider range, so a step of at
    most ``s``. Each side's copy of ``x`` is within half its step of ``x``, so the two copies
    differ by at most ``s`` per element, and output channel ``c`` by at most
    ``s * sum_k |w_ck|``; 1e-5 covers float accumulation order. The mean error must also
    stay under a quarter of that bound: rounding errors of opposite signs cancel, so a mean
    near the worst case would mean a systematic shift, not rounding.
    """
    from tests.peer_annotation import library

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**DYNAMIC))
    converted, lowered = _dynamic_lowering(quantizer, library("pt2e_quant"))
    assert lowered.undelegated == []
    torch.manual_seed(1)
    test_input = torch.randn(4, 32)
    with torch.no_grad():
        expected = converted(test_input)
    (actual,) = run_pte(lowered.pte, (test_input,))
    (choose,) = [n for n in converted.graph.nodes if n.target == qdq_ops.CHOOSE_QPARAMS]
    step, _ = qdq_ops.CHOOSE_QPARAMS(test_input, *choose.args[1:])
    (linear,) = [n for n in converted.graph.nodes if n.target == torch.ops.aten.linear.default]
    weight_dq = linear.args[1]
    int_weight, scales = (getattr(converted, a.target) for a in weight_dq.args[:2])
    weight = int_weight.float() * scales[:, None]
    bound = step * weight.abs().sum(dim=1) + 1e-5  # one per output channel
    error = (actual - expected).abs()
    assert torch.all(error <= bound), f"worst {(error / bound).max():.3f} of the bound"
    assert (error / bound).mean() <= 0.25, f"mean {(error / bound).mean():.3f} of the bound"
