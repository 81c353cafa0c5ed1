"""XNNPACK numerics op by op: given the same int8 inputs, each op lands within one step.

test_xnnpack_lowering.py bounds the whole ``.pte`` output at two quantization steps because
transformer_encoder_block drifts two output steps on a few inputs in a hundred. That is
compounding, not one bad kernel. Measured on 100 inputs (seeds 0-99 of ``fresh_like``), the
.pte's int8 value of every quantized tensor compared with what our converted model computes
for that op *from the .pte's own int8 inputs*:

* no op is ever more than 1 step off: linear (and, in mobilenet_v3_block, conv and average
  pooling) on under 0.1% of elements, add on one element in 25,600; everything else (GELU,
  softmax, layer norm, hardswish, the view/transpose requantizations) is exact;
* the end-to-end drift grows along the chain: 1 step at the linears, 3 own steps after GELU
  (its output scale is half of fc1's, so one fc1 step is two GELU steps), 2 steps at the
  final residual add, which sums a 1-step error of ``add`` and a same-signed 1-step error of
  ``fc2`` (seed 51: ``(0.0201 + 0.0061) / 0.0207`` = 1.26 output steps apart before rounding, 2
  after; the add itself is exact given its inputs).

The per-op differences come from XNNPACK computing in integers: ExecuTorch quantizes the
float bias to int32 at scale ``input_scale * weight_scale`` (``QuantParams.from_bias`` in
executorch/backends/xnnpack/operators/quant_params.py) and XNNPACK's qs8 kernels requantize
the int32 accumulator with one fp32 multiply and a round-to-nearest (the ``fp32``
requantization of XNNPACK's ``params-init.c``), while our reference sums dequantized floats.
Elements close to a rounding tie can land on either side.

So the guarantee that holds, and that this file pins, is per op: for every activation
quantize node of the model, ``|pte - reference(pte inputs)| <= 1`` in that tensor's own
int8 units. Method: the converted graph is copied with every activation quantize node added
to its outputs, so one lowering and one run per input expose all intermediate int8 tensors;
the reference is then replayed with an ``Interpreter`` that substitutes the .pte's value at
every quantize node, so each op sees exactly the int8 inputs XNNPACK saw. Taps are the int8
quantize outputs, not the dequantize nodes: a dequantize whose consumer XNNPACK runs in int8
comes back from the delegate unwritten (zeros or garbage), observed with executorch 1.5.1.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor
from torch.fx import GraphModule, Interpreter, Node

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops.qdq_ops import is_quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.ptq import quantize_zoo_model

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

from tests.quantizers.xnnpack.test_xnnpack_lowering import (  # noqa: E402
    PRESETS,
    fresh_like,
    lower,
    run_pte,
)

#: Transformer: linear, matmul, softmax, layer norm, GELU, residual adds, view requantizes;
#: both weight presets since the weight's qscheme changes the bias scale XNNPACK uses.
#: MobileNetV3: conv, depthwise conv, hardswish, pooling, squeeze-excite mul, residual add.
CASES = [
    ("transformer_encoder_block", "per_channel"),
    ("transformer_encoder_block", "per_tensor"),
    ("mobilenet_v3_block", "per_channel"),
]

#: Inputs: the first few seeds, plus those whose .pte output drifted two steps end to end in
#: the investigation (module docstring), so the per-op bound is checked where it matters.
SEEDS = (*range(16), 48, 51, 56, 60)

#: Largest difference, in the tensor's own int8 units, allowed between XNNPACK and our
#: reference for one op fed identical int8 inputs (module docstring: measured maximum).
MAX_LOCAL_STEPS = 1


def with_quantize_taps(converted: GraphModule) -> tuple[GraphModule, list[Node]]:
    """A copy of ``converted`` that also returns every activation quantize node's int8 output.

    Weight quantize nodes were folded into constants at convert, so every ``call_function``
    quantize is an activation. The model's own outputs stay first; the pytree output spec is
    dropped so the extra outputs flatten as a plain tuple.
    """
    tapped = copy.deepcopy(converted)
    graph = tapped.graph
    taps = [node for node in graph.nodes if is_quantize(node)]
    (output,) = [node for node in graph.nodes if node.op == "output"]
    leaves = tuple(torch.utils._pytree.tree_leaves(output.args[0]))
    output.args = (leaves + tuple(taps),)
    graph._codegen = torch.fx.graph.CodeGen()
    graph.lint()
    tapped.recompile()
    return tapped, taps


class FedReference(Interpreter):
    """Our converted graph, but every quantize node takes the value the ``.pte`` produced.

    ``local[name]`` keeps what the reference computed at that quantize node before the swap:
    the op's output from exactly the int8 inputs XNNPACK had, so ``pte - local`` is the
    op's own error, free of anything inherited from upstream.
    """

    def __init__(self, module: GraphModule, pte_values: dict[str, Tensor]) -> None:
        super().__init__(module)
        self.pte_values = pte_values
        self.local: dict[str, Tensor] = {}

    def run_node(self, n: Node) -> object:
        value = super().run_node(n)
        if n.name in self.pte_values:
            self.local[n.name] = value
            return self.pte_values[n.name]
        return value


def op_label(tap: Node) -> str:
    """How a failure names a quantize node: by itself and the op whose output it quantizes."""
    return f"{tap.name} ({tap.args[0].name})"


def local_errors(
    tapped: GraphModule, taps: list[Node], outputs: list[Tensor], inputs: tuple[Tensor, ...]
) -> dict[str, int]:
    """Per quantize node (named by the op producing it), max |pte - reference| in int8 units,
    given the ``outputs`` the .pte of ``tapped`` returned for ``inputs``."""
    values = dict(zip((t.name for t in taps), outputs[-len(taps) :], strict=True))
    reference = FedReference(tapped, values)
    with torch.no_grad():
        reference.run(*inputs)
    return {
        op_label(tap): int((values[tap.name].int() - reference.local[tap.name].int()).abs().max())
        for tap in taps
    }


@pytest.mark.parametrize(("name", "preset"), CASES)
def test_each_quantized_op_is_within_one_step_given_the_same_int8_inputs(
    name: str, preset: str
) -> None:
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**PRESETS[preset]))
    converted, example = quantize_zoo_model(name, quantizer)
    tapped, taps = with_quantize_taps(converted)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pte = lower(tapped, example).to_executorch().buffer
    assert len(taps) >= 10, f"expected every activation quantize tapped, got {len(taps)}"
    worst: dict[str, int] = {}
    for seed in SEEDS:
        torch.manual_seed(seed)
        inputs = fresh_like(example)
        for op, error in local_errors(tapped, taps, run_pte(pte, inputs), inputs).items():
            worst[op] = max(worst.get(op, 0), error)
    too_far = {op: error for op, error in worst.items() if error > MAX_LOCAL_STEPS}
    assert not too_far, f"ops beyond {MAX_LOCAL_STEPS} step from identical int8 inputs: {too_far}"


class _OffByThree(Interpreter):
    """A stand-in for a .pte whose kernel for one quantize node is 3 steps off on one element
    and whose every other op is exact, given its inputs."""

    def __init__(self, module: GraphModule, target: str) -> None:
        super().__init__(module)
        self.target = target

    def run_node(self, n: Node) -> object:
        value = super().run_node(n)
        if n.name == self.target:
            shifted = value.int()
            shifted[0, 0] += 3 if shifted[0, 0] <= 124 else -3
            return shifted.to(value.dtype)
        return value


def test_fed_reference_measures_only_the_local_error() -> None:
    """The replay itself: a fake .pte whose first linear is 3 steps off on one element shows a
    local error of 3 there and 0 at the second linear, which inherits the shifted input but
    computes exactly from it; the plain reference comparison would blame both."""

    class TwoLinears(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = torch.nn.Linear(4, 8), torch.nn.Linear(8, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.second(self.first(x))

    torch.manual_seed(0)
    model = TwoLinears().eval()
    example = (torch.randn(2, 4),)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        prepared(*example)
        tapped, taps = with_quantize_taps(convert_pt2e(prepared))
    first, second = (t for t in taps if t.args[0].target == torch.ops.aten.linear.default)
    with torch.no_grad():
        fake_pte = list(_OffByThree(tapped, first.name).run(*example))
        exact = tapped(*example)[-len(taps) :]
    errors = local_errors(tapped, taps, fake_pte, example)
    assert errors[op_label(first)] == 3
    assert errors[op_label(second)] == 0
    inherited = fake_pte[-len(taps) + taps.index(second)].int() - exact[taps.index(second)].int()
    assert inherited.abs().max() > 0, "the shift must reach the second linear for this to mean much"
