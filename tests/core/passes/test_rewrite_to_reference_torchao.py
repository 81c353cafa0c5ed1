"""The reference representation against torchao's, the oracle for every pattern torchao defines.

Each case quantizes one tiny model with the same annotation through torchao's pipeline and
ours, converts with ``use_reference_representation=True`` and requires torchao's graph node
for node (targets and arguments in order, ``out_dtype`` included), bit-identical outputs, and
that ours still runs after ``torch.export``. torchao's conv and max-pool patterns spell
``aten.convolution`` and ``max_pool2d_with_indices``, so those cases export decomposed.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.rewrite_to_reference import rewrite_to_reference
from tests.peer_annotation import int8_specs, library

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")

aten = torch.ops.aten
OUT_DTYPE = torch.ops.higher_order.out_dtype
WEIGHTED = (aten.linear.default, aten.convolution.default)
RELU = (aten.relu.default,)


# ------------------------------------------------------------------------------------------
# one annotation, built from either library's classes
# ------------------------------------------------------------------------------------------


def _quantizer(lib: SimpleNamespace, per_channel: bool, dynamic: bool, quantize_output: bool):
    """int8 annotation of the ops torchao's reference patterns cover:

    * linear / convolution: input and weight; the output too unless ``quantize_output`` is
      False or the input is dynamic;
    * add: both inputs, and the output after a relu if one follows (add + relu), else its own;
    * max_pool2d_with_indices: the input, and the pooled values (getitem 0) share its qparams.
    """
    specs = int8_specs(lib, per_channel)
    activation = specs.activation
    if dynamic:
        activation = lib.api.QuantizationSpec(
            dtype=torch.int8,
            quant_min=-128,
            quant_max=127,
            qscheme=torch.per_tensor_affine,
            is_dynamic=True,
            observer_or_fake_quant_ctr=lib.observers.PlaceholderObserver,
        )
    annotation = lib.api.QuantizationAnnotation
    shared = lib.api.SharedQuantizationSpec

    def annotate(node: Node, inputs: dict, output: Any = None) -> None:
        node.meta["quantization_annotation"] = annotation(
            input_qspec_map=inputs, output_qspec=output, _annotated=True
        )

    class ReferenceAnnotator(lib.api.Quantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            for node in model.graph.nodes:
                if node.target in WEIGHTED:
                    x, w = node.args[:2]
                    output = activation if quantize_output and not dynamic else None
                    annotate(node, {x: activation, w: specs.weight}, output)
                elif node.target is aten.add.Tensor:
                    inputs = {a: activation for a in node.args[:2] if isinstance(a, Node)}
                    if len(inputs) != 2:
                        continue
                    users = list(node.users)
                    relu = users[0] if len(users) == 1 and users[0].target in RELU else None
                    annotate(node, inputs, None if relu else activation)
                    if relu is not None:
                        annotate(relu, {}, activation)
                elif node.target is aten.max_pool2d_with_indices.default:
                    x = node.args[0]
                    annotate(node, {x: activation})
                    (values,) = [u for u in node.users if u.args[1] == 0]
                    annotate(values, {}, shared((x, node)))
            return model

        def validate(self, model: GraphModule) -> None:
            return None

    return ReferenceAnnotator()


# ------------------------------------------------------------------------------------------
# models and cases
# ------------------------------------------------------------------------------------------


class Add(nn.Module):
    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = a + b
        return torch.relu(y) if self.relu else y


class MaxPool(nn.Module):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs = args, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, *self.args, **self.kwargs)


class Chain(nn.Module):
    """Several patterns feeding each other: linear, linear -> add + relu -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.a(x) + self.b(x)))


def _x(*shape: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(*shape),)


@dataclass
class Case:
    model: Any  # () -> nn.Module
    inputs: tuple[torch.Tensor, ...]
    options: dict = field(default_factory=dict)  # per_channel, dynamic, quantize_output
    decompose: bool = False
    fold_quantize: bool = True


CASES = {
    # torchao's fused patterns
    "linear": Case(lambda: nn.Linear(8, 5), _x(3, 8)),
    "linear_3d_input": Case(lambda: nn.Linear(8, 5), _x(2, 4, 8)),
    "linear_unfolded_weight": Case(lambda: nn.Linear(8, 5), _x(3, 8), fold_quantize=False),
    "convolution": Case(
        lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), _x(2, 4, 9, 9), decompose=True
    ),
    "add": Case(Add, (torch.randn(2, 3, 4, 4), 3 * torch.randn(2, 3, 4, 4))),
    "add_relu": Case(lambda: Add(relu=True), (torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))),
    "max_pool2d_with_indices": Case(lambda: MaxPool(2), _x(1, 3, 8, 8), decompose=True),
    "max_pool2d_with_indices_stride": Case(
        lambda: MaxPool(3, stride=1), _x(1, 3, 8, 8), decompose=True
    ),
    "dynamic_linear": Case(lambda: nn.Linear(8, 5), _x(3, 8), {"dynamic": True}),
    "chain": Case(Chain, _x(5, 8)),
    # torchao's standalone q/dq: scalar and tensor (dynamic) qparams, per channel
    "quantize_dequantize": Case(
        lambda: nn.Linear(8, 5), _x(3, 8), {"quantize_output": False}, fold_quantize=False
    ),
    "quantize_dequantize_per_channel": Case(
        lambda: nn.Linear(8, 5),
        _x(3, 8),
        {"quantize_output": False, "per_channel": True},
        fold_quantize=False,
    ),
    "dynamic_quantize_dequantize": Case(
        lambda: nn.Linear(8, 5), _x(3, 8), {"dynamic": True, "per_channel": True}
    ),
    # no torchao pattern for the op (a padded pool): q/dq around a float op, as torchao does
    "max_pool2d_with_indices_padded": Case(
        lambda: MaxPool(3, stride=2, padding=1), _x(1, 3, 8, 8), decompose=True
    ),
}


def _convert(lib_name: str, case: Case) -> GraphModule:
    lib = library(lib_name)
    torch.manual_seed(0)
    exported = torch.export.export(case.model().eval(), case.inputs)
    if case.decompose:
        exported = exported.run_decompositions()
    options = {"per_channel": False, "dynamic": False, "quantize_output": True, **case.options}
    prepared = lib.prepare_pt2e(exported.module(), _quantizer(lib, **options))
    for scale in (2.0, 1.0, 0.5):
        prepared(*(scale * torch.randn_like(t) for t in case.inputs))
    prepared(*case.inputs)
    return lib.convert_pt2e(
        prepared, use_reference_representation=True, fold_quantize=case.fold_quantize
    )


def _signature(gm: GraphModule) -> list[tuple]:
    """Every call_function in order as (target, args, kwargs); an argument produced by another
    call is named by that call's position, placeholders and buffers by their kind."""
    position: dict[Node, int] = {}
    calls = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue

        def name(arg: Node) -> Any:
            return position.get(arg, arg.op)

        args = torch.fx.node.map_arg(node.args, name)
        kwargs = torch.fx.node.map_arg(node.kwargs, name)
        calls.append((node.target, args, kwargs))
        position[node] = len(position)
    return calls


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_graph_and_bit_identical_outputs_as_torchao(name: str) -> None:
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _convert("torchao", case)
        ours = _convert("pt2e_quant", case)

    assert _signature(ours) == _signature(theirs)
    torch.manual_seed(1)
    test_input = tuple(torch.randn_like(t) for t in case.inputs)
    expected = theirs(*test_input)
    assert torch.equal(ours(*test_input), expected)
    reexported = torch.export.export(ours, test_input).module()
    assert torch.equal(reexported(*test_input), expected)


def test_fused_patterns_accumulate_through_out_dtype() -> None:
    """The point of torchao's form: backends match ``out_dtype(linear / convolution, int32)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = _convert("pt2e_quant", CASES["chain"])
    accumulations = [
        n.args[0]
        for n in ours.graph.find_nodes(op="call_function", target=OUT_DTYPE)
        if n.args[1] == torch.int32
    ]
    # per linear: the accumulation, the bias and the requantize; add + relu: one per input
    assert accumulations.count(aten.linear.default) == 3
    assert accumulations.count(aten.div.Tensor) == 3
    assert accumulations.count(aten.mul.Tensor) == 3 + 2


# ------------------------------------------------------------------------------------------
# deliberate difference: where torchao's form does not run or computes another shape
# ------------------------------------------------------------------------------------------

UNRUNNABLE = {
    # torchao matches a bias-free op too and divides None by the scale
    "linear_without_bias": Case(lambda: nn.Linear(8, 5, bias=False), _x(3, 8)),
    "convolution_without_bias": Case(
        lambda: nn.Conv2d(3, 4, 3, bias=False), _x(1, 3, 6, 6), decompose=True
    ),
    # its convolution form unsqueezes the bias for (N, C, H, W): 1-D comes out (C, C, L)
    "conv1d": Case(lambda: nn.Conv1d(3, 4, 3), _x(1, 3, 8), decompose=True),
    "conv3d": Case(lambda: nn.Conv3d(3, 4, 3), _x(1, 3, 5, 5, 5), decompose=True),
    # CPU has no int32 kernel for these
    "dilated_convolution": Case(
        lambda: nn.Conv2d(3, 4, 3, dilation=2), _x(1, 3, 9, 9), decompose=True
    ),
    "transposed_convolution": Case(
        lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), _x(1, 3, 5, 5), decompose=True
    ),
}


@pytest.mark.parametrize("name", sorted(UNRUNNABLE))
def test_where_torchaos_form_would_not_run_ours_does(name: str) -> None:
    """torchao's model fails or returns the wrong shape; ours keeps its own form there (q/dq
    around the float op, or our exact linear), which runs, has the op's shape and re-exports."""
    case = UNRUNNABLE[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _convert("torchao", case)
        ours = _convert("pt2e_quant", case)
    expected_shape = case.model()(*case.inputs).shape
    try:
        assert theirs(*case.inputs).shape != expected_shape
    except RuntimeError:  # NotImplementedError included
        pass
    out = ours(*case.inputs)
    assert out.shape == expected_shape
    accumulations = [n.args[0] for n in ours.graph.find_nodes(op="call_function", target=OUT_DTYPE)]
    assert not set(accumulations) & set(WEIGHTED)
    reexported = torch.export.export(ours, case.inputs).module()
    assert torch.equal(reexported(*case.inputs), out)


# ------------------------------------------------------------------------------------------
# hand-built q/dq graphs through both passes
# ------------------------------------------------------------------------------------------


def _rewritten_by_both(model: nn.Module, inputs: tuple) -> tuple[GraphModule, GraphModule]:
    """(ours, torchao's) rewrite of one exported graph."""
    from torchao.quantization.pt2e.reference_representation_rewrite import (
        reference_representation_rewrite,
    )

    gm = torch.export.export(model, inputs).module()
    ours = copy.deepcopy(gm)
    assert run_pass(ours, rewrite_to_reference) is True
    return ours, reference_representation_rewrite(copy.deepcopy(gm))


def _near_ties(scale: float) -> torch.Tensor:
    """Values at and next to the rounding ties ``(k + 0.5) * scale`` of an int8 grid."""
    ties = (torch.arange(-128, 127, dtype=torch.float32) + 0.5) * scale
    up, down = torch.full_like(ties, 1e9), torch.full_like(ties, -1e9)
    return torch.cat([ties, torch.nextafter(ties, up), torch.nextafter(ties, down)])


class QuantizeAtTies(nn.Module):
    """int8 quantize per tensor and per channel, and the per-channel dequantize."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scales", torch.tensor([0.0258, 0.0394, 0.0054]))
        self.register_buffer("zero_points", torch.tensor([0, 3, -5]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = (self.scales, self.zero_points, 1, -128, 127, torch.int8)
        per_channel = qdq_ops.QUANTIZE_PER_CHANNEL_ANY(x, *args)
        return (
            qdq_ops.QUANTIZE_PER_TENSOR_ANY(x, 0.0258, 3, -128, 127, torch.int8),
            per_channel,
            qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY(per_channel, *args),
        )


def test_int8_quantize_divides_like_torchao_not_like_the_kernel() -> None:
    """torchao's quantize computes ``x / scale`` where the kernel computes ``x * (1 / scale)``:
    at rounding ties they part, and ours follows torchao."""
    x = torch.stack([_near_ties(s) for s in (0.0258, 0.0394, 0.0054)], dim=1)
    model = QuantizeAtTies()
    ours, theirs = _rewritten_by_both(model, (x,))
    assert _signature(ours) == _signature(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs(x), strict=True))
    per_tensor, per_channel, dequantized = ours(x)
    kernel_per_tensor, kernel_per_channel, _ = model(x)
    assert not torch.equal(per_tensor, kernel_per_tensor)
    assert not torch.equal(per_channel, kernel_per_channel)
    args = (model.scales, model.zero_points, 1, -128, 127, torch.int8)
    assert torch.equal(dequantized, qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY(per_channel, *args))


def test_int8_quantize_of_a_bfloat16_tensor_takes_torchaos_form() -> None:
    """torchao's pattern does not look at the input's dtype; ours follows (a uint8 one stays,
    see test_rewrite_to_reference_rules)."""

    class Bf16Quantize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return qdq_ops.QUANTIZE_PER_TENSOR_ANY(
                x.to(torch.bfloat16), 0.0137, 3, -128, 127, torch.int8
            )

    x = torch.linspace(-1.7, 1.7, 4001)
    ours, theirs = _rewritten_by_both(Bf16Quantize(), (x,))
    assert _signature(ours) == _signature(theirs)
    assert torch.equal(ours(x), theirs(x))
