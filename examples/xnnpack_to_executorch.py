"""Quantize a model for XNNPACK and run it on ExecuTorch.

    export -> XNNPACKQuantizer -> prepare_pt2e -> calibrate -> convert_pt2e
      -> export again -> to_edge_transform_and_lower(XnnpackPartitioner) -> .pte -> run

The converted model is an ordinary GraphModule with quantize/dequantize ops around float
ops. ExecuTorch's XNNPACK partitioner recognises those q/dq patterns and replaces each
quantized region with one call into an int8 XNNPACK kernel graph (a "delegate"). Ops it
cannot take stay in the program as portable ExecuTorch ops; a well-quantized model leaves
none. The .pte file is what ships to a device; here ExecuTorch's Python runtime loads it.

Run: python examples/xnnpack_to_executorch.py [--output model.pte] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
from torch import nn

from pt2e_quant import convert_pt2e, prepare_pt2e
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config


class SmallNet(nn.Module):
    """conv-bn-relu stem, a residual block, global pool, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.bn(self.conv(x)) + x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def quantize(model: nn.Module, calibration: list[torch.Tensor]) -> torch.fx.GraphModule:
    """int8 activations, per-channel int8 weights: XNNPACK's recommended static preset."""
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    exported = torch.export.export(model, (calibration[0],)).module()
    prepared = prepare_pt2e(exported, quantizer)  # folds batch norm, inserts observers
    with torch.no_grad():
        for batch in calibration:  # observers record activation ranges
            prepared(batch)
    return convert_pt2e(prepared)  # observers -> quantize/dequantize ops


def count_ops(edge_program) -> tuple[int, int]:
    """(ops inside XNNPACK delegates, ops left outside them) in the lowered program."""
    delegate = torch.ops.higher_order.executorch_call_delegate
    graph_module = edge_program.graph_module
    delegated = undelegated = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or "getitem" in str(node.target):
            continue
        if node.target is delegate:
            lowered = getattr(graph_module, node.args[0].target)  # a LoweredBackendModule
            inner = lowered.original_module.graph.nodes
            delegated += sum(1 for n in inner if n.op == "call_function")
        else:
            undelegated += 1
    return delegated, undelegated


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="where to write the .pte (default: temp dir)")
    parser.add_argument("--quick", action="store_true", help="calibrate on 2 batches, not 16")
    args = parser.parse_args(argv)
    # ExecuTorch 1.5 still builds torch's deprecated LeafSpec: noise with nothing to act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)

    torch.manual_seed(0)
    model = SmallNet().eval()
    calibration = [torch.randn(1, 3, 32, 32) for _ in range(2 if args.quick else 16)]
    converted = quantize(model, calibration)

    # Lowering works on an ExportedProgram, so the converted GraphModule is exported again.
    example = (calibration[0],)
    edge = to_edge_transform_and_lower(
        torch.export.export(converted, example), partitioner=[XnnpackPartitioner()]
    )
    delegated, undelegated = count_ops(edge.exported_program())

    output = args.output or Path(tempfile.mkdtemp()) / "small_net_xnnpack.pte"
    output.write_bytes(edge.to_executorch().buffer)
    print(f"wrote {output} ({output.stat().st_size / 1024:.1f} KiB)")

    # The runtime only sees the file: this is what a device would load.
    method = Runtime.get().load_program(output).load_method("forward")
    test_input = torch.randn(1, 3, 32, 32)
    (on_executorch,) = method.execute([test_input])
    with torch.no_grad():
        reference = converted(test_input)
    max_diff = (on_executorch - reference).abs().max().item()
    # The output is int8 dequantized with this scale: one int8 step of the result.
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    step = [n for n in converted.graph.nodes if n.target == dequantize][-1].args[1]

    print(f"delegated ops: {delegated}, undelegated ops: {undelegated}")
    print(f"max abs diff ExecuTorch vs converted model: {max_diff:.6f} (output step {step:.6f})")
    return max_diff


if __name__ == "__main__":
    main()
