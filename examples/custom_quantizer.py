"""A complete int8 backend in about 60 lines: a table of rules, one walk, one real ``validate``.

A quantizer only *describes* quantization: it writes a ``QuantizationAnnotation`` on the nodes
it wants in int8 (which input edges and which output get which spec). ``prepare_pt2e`` turns
the annotations into observers, ``convert_pt2e`` into quantize/dequantize ops. So a backend is
the answer to "which ops does my kernel library run in int8, with which layouts?", written as
data: :data:`RULES` below. Reading that one table tells you what this backend quantizes.

    rule            ops                    inputs                     output
    conv / linear   conv2d, linear         act int8, weight per-ch    int8, or fused relu/hardtanh
    add             add                    act int8, shared with the  int8, or fused relu/hardtanh
                                           producers' outputs
    pool            max_pool2d             act int8                   shares the input's qparams
    cat             cat                    share the first input's    shares the first input's

Patterns are recognised from aten ops and data flow (``conv2d -> relu``), never from export
metadata, so a torch release that renames modules cannot silently turn this into a no-op.
The script quantizes a small conv net, prints the q/dq op count, which ops were quantized and
the SQNR, and shows ``validate`` rejecting a model this backend cannot run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import (
    AnnotationError,
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    SharedQuantizationSpec,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.contract.annotation import (
    get_annotation,
    is_annotated,
    mark_annotated,
    set_annotation,
)
from pt2e_quant.coverage import explain
from pt2e_quant.errors import describe_node, graph_context
from pt2e_quant.graph.patterns import is_float_tensor, next_op
from pt2e_quant.observer import HistogramObserver, PerChannelMinMaxObserver
from pt2e_quant.ops.families import ADD_OPS, CONV_OPS, HARDTANH_OPS, LINEAR_OPS, RELU_OPS
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize

aten = torch.ops.aten

# int8 activations, one scale per tensor: what int8 GEMM / conv kernels consume and produce.
ACT = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-128,
    quant_max=127,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=HistogramObserver.with_args(eps=2**-12),
)
# Symmetric per-output-channel weights: channels differ in range, and a zero point of 0 keeps
# the kernel's inner loop a plain integer dot product. Bias stays float (no int32 spec): the
# kernel folds it in after rescaling, so quantizing it would only add error.
WEIGHT = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-127,
    quant_max=127,
    qscheme=torch.per_channel_symmetric,
    ch_axis=0,
    observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
)
FUSABLE = RELU_OPS | HARDTANH_OPS  # run inside the producer's kernel: no q/dq in between


def _tensors(node: Node) -> list[Node]:
    """The float tensor operands (``x + 1.0`` has one)."""
    return [a for a in node.args if is_float_tensor(a)]


@dataclass(frozen=True)
class Rule:
    """One row of the table: the ops it matches, the spec of each input edge, and the output.

    ``fuses``: activations that may follow in the same kernel, so the output spec moves to
    them. ``shared_output``: ops that only move values (pooling, concatenation) keep the first
    input's scale and zero point, so no requantization is needed around them.
    """

    ops: frozenset
    inputs: Callable[[Node], dict[Node, QuantizationSpec | SharedQuantizationSpec]]
    fuses: frozenset = frozenset()
    shared_output: bool = False


def _cat_inputs(node: Node) -> dict:
    first, *rest = node.args[0]  # every operand shares the first one's qparams
    return {first: ACT, **{t: SharedQuantizationSpec((first, node)) for t in rest}}


RULES = (
    Rule(CONV_OPS | LINEAR_OPS, lambda n: {n.args[0]: ACT, n.args[1]: WEIGHT}, FUSABLE),
    Rule(ADD_OPS, lambda n: {t: ACT for t in _tensors(n)}, FUSABLE),
    Rule(frozenset({aten.max_pool2d.default}), lambda n: {n.args[0]: ACT}, shared_output=True),
    Rule(frozenset({aten.cat.default}), _cat_inputs, shared_output=True),
)


class RuleQuantizer(Quantizer):
    """Applies :data:`RULES` in graph order; ``validate`` enforces what the kernels need."""

    def rule_ops(self) -> frozenset:
        """Every op with a rule; the coverage report reads it to say "no rule" for the rest."""
        return frozenset().union(*(rule.ops for rule in RULES))

    def annotate(self, model: GraphModule) -> GraphModule:
        for node in model.graph.nodes:
            rule = next((r for r in RULES if node.target in r.ops), None)
            # no rule, fused into an earlier match, or integer math (index arithmetic)
            if rule is None or is_annotated(node) or not is_float_tensor(node):
                continue
            inputs = rule.inputs(node)
            output = (
                SharedQuantizationSpec((next(iter(inputs)), node)) if rule.shared_output else ACT
            )
            activation = next_op(node, rule.fuses)
            if activation is not None:  # conv -> relu: one int8 kernel, quantize after relu
                set_annotation(activation, QuantizationAnnotation(output_qspec=output))
                output = None
            set_annotation(node, QuantizationAnnotation(inputs, output))
            mark_annotated([node] + ([activation] if activation is not None else []))
        return model

    def validate(self, model: GraphModule) -> None:
        """Weights must be stored constants: the kernels prepack int8 weights ahead of time,
        so a weight computed at run time (``conv2d(x, w * s)``) cannot run on this backend."""
        for node in model.graph.nodes:
            annotation = get_annotation(node)
            for edge, spec in (annotation.input_qspec_map if annotation else {}).items():
                if spec is WEIGHT and edge.op != "get_attr":
                    raise AnnotationError(
                        f"{describe_node(node)}: its weight is computed at run time by "
                        f"{describe_node(edge)}, but this backend needs a stored weight to "
                        "prepack in int8. Make the weight a parameter, or leave the op float.\n"
                        + graph_context(node)
                    )


class SmallConvNet(nn.Module):
    """conv-bn-relu stem, two branches (relu6 / residual add + relu) concatenated, max pool,
    linear head: one op for each rule of the table."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU6())
        self.residual = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.residual(x) + x)
        x = self.pool(torch.cat([self.branch(x), y], dim=1))
        return self.head(x.mean((2, 3)))


class ScaledWeightConv(nn.Module):
    """A conv whose weight is computed in forward: legal PyTorch, unsupported by this backend."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.scale = nn.Parameter(torch.ones(4, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale)


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|ref| / |ref - actual|)."""
    noise = (reference - actual).norm()
    return float(20 * torch.log10(reference.norm() / noise)) if noise > 0 else float("inf")


def main() -> float:
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    calibration = [torch.randn(4, 3, 16, 16) for _ in range(8)]

    quantizer = RuleQuantizer()
    prepared = prepare_pt2e(torch.export.export(model, (calibration[0],)).module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    quantized = convert_pt2e(prepared)

    test_input = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        sqnr = sqnr_db(model(test_input), quantized(test_input))
    qdq = [n for n in quantized.graph.nodes if is_quantize(n) or is_dequantize(n)]
    coverage = explain(quantized, quantizer)
    print(f"quantized graph: {len(qdq)} quantize/dequantize ops")
    for row in coverage.rows:
        status = "int8" if row.quantized else f"float ({row.reason})"
        print(f"  {row.node:<14} {row.op:<12} {status}")
    print(f"coverage: {coverage.summary()}")
    print(f"SQNR float vs int8: {sqnr:.1f} dB")

    bad = ScaledWeightConv().eval()
    try:
        prepare_pt2e(torch.export.export(bad, (torch.randn(1, 3, 8, 8),)).module(), quantizer)
    except AnnotationError as error:
        print(f"validate rejected ScaledWeightConv: {error}")
    return sqnr


if __name__ == "__main__":
    main()
