"""Quantize a conv net for x86 CPUs and compile it with Inductor.

    export -> X86InductorQuantizer -> prepare_pt2e -> calibrate -> convert_pt2e
      -> torch.compile with freezing -> int8 oneDNN kernels

The converted model only *describes* int8 execution with quantize/dequantize ops around float
convs. Inductor turns that into real int8 kernels when it may treat the weights as constants
("freezing"): it prepacks each int8 weight and fuses dq -> conv -> relu -> q into one oneDNN
quantized conv. Each fusion bumps a counter in ``torch._dynamo.utils.counters["inductor"]``;
the script prints them with the int8 and fp32 latencies (both compiled the same way).

Run: python examples/x86_inductor.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config


class SmallConvNet(nn.Module):
    """Three conv-bn-relu blocks (one residual), max pool, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.conv1 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.conv2(self.conv1(x)) + x)  # conv + add + relu: one fused qconv
        x = self.pool(x).mean((2, 3))
        return self.head(x)


def quantize(model: nn.Module, calibration: list[torch.Tensor]) -> torch.fx.GraphModule:
    """uint8 activations, per-channel int8 weights: the recipe oneDNN's kernels expect."""
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    exported = torch.export.export(model, (calibration[0],)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    return convert_pt2e(prepared)


def compile_frozen(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """torch.compile with freezing, triggered once so compile time stays out of the timings.

    ``config.patch`` scopes the setting to this block: nothing global is left changed.
    """
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch._inductor.config.patch(freezing=True), torch.no_grad():
        compiled(example)
    return compiled


def median_ms(model: nn.Module, example: torch.Tensor, iterations: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(iterations):
            start = time.perf_counter()
            model(example)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, few iterations")
    args = parser.parse_args(argv)
    batch, iterations = (1, 5) if args.quick else (16, 30)

    torch.manual_seed(0)
    model = SmallConvNet().eval()
    calibration = [torch.randn(batch, 3, 32, 32) for _ in range(4)]
    example = calibration[0]
    quantized = quantize(model, calibration)

    fp32 = compile_frozen(model, example)
    torch._dynamo.utils.counters.clear()  # count only what the int8 compile fuses
    int8 = compile_frozen(quantized, example)
    fusions = {
        name: count
        for name, count in sorted(torch._dynamo.utils.counters["inductor"].items())
        if name.startswith("q") and name.endswith("_count")
    }

    # Inductor's frozen graphs are specialised to the example's shape; time on that shape.
    fp32_ms, int8_ms = median_ms(fp32, example, iterations), median_ms(int8, example, iterations)
    with torch.no_grad():
        max_diff = (int8(example) - quantized(example)).abs().max().item()

    print("quantization fusions:")
    for name, count in fusions.items():
        print(f"  {name}: {count}")
    print(
        f"fp32 compiled: {fp32_ms:.3f} ms, int8 compiled: {int8_ms:.3f} ms (median of {iterations})"
    )
    print(f"speedup: {fp32_ms / int8_ms:.2f}x")
    print(f"max abs diff int8 compiled vs converted model: {max_diff:.6f}")
    return fusions


if __name__ == "__main__":
    main()
