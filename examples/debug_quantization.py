"""Debugging a quantized model: find the layer that loses the accuracy, two ways.

    export -> handles -> prepare / calibrate / convert -> numeric report -> first jump
                                                     \\-> sensitivity ranking

The model below is a small conv net with one deliberately badly scaled layer, ``body``. The
stem's output channel 3 is dead (zero weights and bias, so its relu outputs exactly 0), and
``body`` reads that channel with weights of 6.0, fifty times its largest other weight. In
float they multiply zeros and change nothing. Under per-tensor int8 weight quantization they
set the scale of the whole tensor (6.0 / 127), so ``body``'s real weights keep about five
levels.
Per-channel weights would not mind; per-tensor (what this example uses) does, like real
models whose trained-but-unused weights grew large.

* The **numeric report** runs the float and the quantized model side by side and compares
  every op, matched through numeric debug handles. Its first row whose SQNR drops by more
  than 10 dB is where error first jumps.
* **Sensitivity** quantizes one layer at a time, everything else float, and ranks the layers
  by how much each alone damages the model output: the list a fallback policy would use.

Both point at ``body``.
"""

from __future__ import annotations

import torch
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.debug.report import numeric_report
from pt2e_quant.debug.sensitivity import sensitivity
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

JUMP_THRESHOLD_DB = 10.0


class SmallConvNet(nn.Module):
    """stem (conv-relu) -> body (conv-relu, badly scaled) -> head (conv-relu) -> pool -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.body(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def badly_scaled_model() -> SmallConvNet:
    """The model with ``body`` scaled as the module docstring describes."""
    torch.manual_seed(0)
    model = SmallConvNet().eval()
    with torch.no_grad():
        model.stem[0].weight[3] = 0.0
        model.stem[0].bias[3] = 0.0
        model.body[0].weight[:, 3] = 6.0
    return model


def main() -> None:
    model = badly_scaled_model()
    generator = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(2, 3, 12, 12, generator=generator),) for _ in range(4)]
    example_inputs = calibration[0]

    # Handles go on the program before .module(), so the float and quantized models share them.
    ep = torch.export.export(model, example_inputs)
    generate_numeric_debug_handle(ep)
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=False)
    )
    prepared = prepare_pt2e(ep.module(), quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    quantized = convert_pt2e(prepared)

    report = numeric_report(ep, quantized, example_inputs)
    print("per-layer numeric report:")
    print(report.to_text())
    jump = report.first_jump(threshold_db=JUMP_THRESHOLD_DB)
    if jump is None:
        print(f"error never jumps by more than {JUMP_THRESHOLD_DB} dB")
    else:
        print(
            f"error first jumps at: {jump.label}: SQNR {jump.activation_sqnr:.1f} dB, "
            f"drop {jump.drop:.1f} dB"
        )

    ranking = sensitivity(ep, quantizer, calibration, progress=False)
    print("\nmost sensitive layers (each quantized alone, the rest float):")
    print(ranking.to_text(top=3))


if __name__ == "__main__":
    main()
