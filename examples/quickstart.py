"""Quick start: export a float model, quantize it to int8, and measure how close it stays.

    export -> prepare_pt2e (observers) -> calibrate -> convert_pt2e (q/dq ops) -> compare

The quantizer below is written out in full (about 40 lines) to show the whole contract: it
annotates every conv / linear with int8 activations and per-channel int8 weights, and lets
ReLU and residual adds keep int8 values. Backend quantizers (XNNPACK, x86) package the same
idea with many more patterns.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from pt2e_quant import (
    QuantizationAnnotation,
    QuantizationSpec,
    Quantizer,
    convert_pt2e,
    prepare_pt2e,
)
from pt2e_quant.observer import HistogramObserver, PerChannelMinMaxObserver

aten = torch.ops.aten

ACTIVATION = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-128,
    quant_max=127,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=HistogramObserver.with_args(eps=2**-12),
)
WEIGHT = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-127,
    quant_max=127,
    qscheme=torch.per_channel_symmetric,
    ch_axis=0,
    observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
)


class SimpleInt8Quantizer(Quantizer):
    """int8 conv/linear (weights per channel), with relu and add running on int8 too."""

    def annotate(self, model: GraphModule) -> GraphModule:
        for node in model.graph.nodes:
            if node.target in (aten.conv2d.default, aten.linear.default):
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: ACTIVATION, node.args[1]: WEIGHT},
                    output_qspec=ACTIVATION,
                )
            elif node.target in (aten.relu.default, aten.add.Tensor):
                tensors = [a for a in node.args if isinstance(a, Node)]
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: ACTIVATION for a in tensors}, output_qspec=ACTIVATION
                )
        return model

    def validate(self, model: GraphModule) -> None:
        return None


class SmallResNet(torch.nn.Module):
    """conv-bn-relu stem, one residual block (in-place relu and add), pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU()
        )
        self.conv1 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU(inplace=True)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        out = self.relu(out)
        return self.head(out.mean((2, 3)))


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|ref| / |ref - actual|)."""
    noise = (reference - actual).norm()
    return float(20 * torch.log10(reference.norm() / noise)) if noise > 0 else float("inf")


def main() -> float:
    torch.manual_seed(0)
    model = SmallResNet().eval()
    calibration = [torch.randn(4, 3, 32, 32) for _ in range(8)]
    example = (calibration[0],)

    exported = torch.export.export(model, example).module()
    prepared = prepare_pt2e(exported, SimpleInt8Quantizer())
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    quantized = convert_pt2e(prepared)

    test_input = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        sqnr = sqnr_db(model(test_input), quantized(test_input))
    q_ops = sum(1 for n in quantized.graph.nodes if "quantize_per" in str(n.target))
    print(f"quantized graph: {q_ops} quantize/dequantize ops")
    print(f"SQNR float vs int8: {sqnr:.1f} dB")
    return sqnr


if __name__ == "__main__":
    main()
