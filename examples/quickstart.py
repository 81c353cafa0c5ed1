"""Quick start: a float model in, an int8 model out, and a number that says how close it stays.

    quantize(model, example_inputs, backend="xnnpack", calibration=batches)
      = export -> prepare (observers) -> calibrate -> convert (q/dq ops) -> re-export

One call does the whole pipeline and leaves ``model`` untouched. What it returns explains
itself: ``result.module`` is the int8 GraphModule, ``result.exported_program`` is ready for
``torch.export.save`` or ExecuTorch lowering, and ``result.coverage`` lists every compute op
with whether it was quantized (and why not). The script prints the SQNR (signal-to-noise ratio
of the int8 output against the float one; above ~30 dB the two agree to about 3%), the
number of quantize/dequantize ops and the coverage summary.

To write the quantizer yourself instead of using a backend preset, see
``examples/custom_quantizer.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant import quantize
from pt2e_quant.ops.qdq_ops import is_dequantize, is_quantize


class SmallResNet(nn.Module):
    """conv-bn-relu stem, one residual block (in-place relu and add), pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(16, 10)

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
    calibration = [(torch.randn(4, 3, 32, 32),) for _ in range(8)]
    example_inputs = calibration[0]

    result = quantize(
        model, example_inputs, backend="xnnpack", calibration=calibration, progress=False
    )

    test_input = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        sqnr = sqnr_db(model(test_input), result.module(test_input))
    qdq = [n for n in result.module.graph.nodes if is_quantize(n) or is_dequantize(n)]
    print(f"SQNR float vs int8: {sqnr:.1f} dB")
    print(f"quantized graph: {len(qdq)} quantize/dequantize ops")
    print(f"coverage: {result.coverage.summary()}")
    return sqnr


if __name__ == "__main__":
    main()
