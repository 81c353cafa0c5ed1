"""prepare_qat_pt2e / convert_pt2e time on conv-bn-relu chains, pt2e_quant vs torchao.

Run from the repository root::

    .venv/bin/python benchmarks/bench_qat.py            # 20, 50, 100 blocks (several minutes)
    .venv/bin/python benchmarks/bench_qat.py --quick    # 5 and 20 blocks

Both libraries get a fresh training-mode export of the same module (export is not timed) and
the XNNPACK QAT config (per-channel weights): ours from ``quantizers``, the peer's from
ExecuTorch, run through torchao's ``prepare_qat_pt2e`` / ``convert_pt2e``. One training-mode
forward runs between the two. torchao's cost is dominated by re-exporting its conv-bn pattern
graphs on every call, so its times barely depend on the model until the matching itself
grows; ours grow linearly with the graph. Times are medians of ``--repeats`` runs; ratios
are ours / torchao.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.models import ConvBnReluChain  # noqa: E402

LIBRARIES = ("pt2e_quant", "torchao")


def _pipeline(lib_name: str) -> tuple[Callable, Callable, object]:
    """(prepare_qat, convert, quantizer) of one library."""
    if lib_name == "pt2e_quant":
        import pt2e_quant
        from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

        config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        quantizer = XNNPACKQuantizer().set_global(config)
        return pt2e_quant.prepare_qat_pt2e, pt2e_quant.convert_pt2e, quantizer
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    config = peer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    return prepare_qat_pt2e, convert_pt2e, peer.XNNPACKQuantizer().set_global(config)


def _time_pipeline(lib_name: str, blocks: int) -> tuple[float, float]:
    """(prepare_qat seconds, convert seconds) for one fresh export."""
    prepare, convert, quantizer = _pipeline(lib_name)
    model = ConvBnReluChain(blocks).train()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    gc.collect()
    start = time.perf_counter()
    prepared = prepare(exported, quantizer)
    prepare_seconds = time.perf_counter() - start
    prepared(*inputs)
    gc.collect()
    start = time.perf_counter()
    convert(prepared)
    return prepare_seconds, time.perf_counter() - start


def measure(blocks: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (prepare, convert) per library; the libraries alternate so drift hits both."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in LIBRARIES}
    for _ in range(repeats):
        for name in LIBRARIES:
            runs[name].append(_time_pipeline(name, blocks))
    return {
        name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for name, rs in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 and 20 blocks, one repeat")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    sizes = (5, 20) if args.quick else (20, 50, 100)
    header = (
        f"{'conv-bn-relu':<14}{'ours prep':>11}{'ao prep':>10}{'ratio':>8}"
        f"{'ours conv':>11}{'ao conv':>10}{'ratio':>8}{'total ratio':>13}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in LIBRARIES:  # untimed warm-up: imports and first-call caches
            _time_pipeline(name, 2)
        print(header)
        print("-" * len(header))
        for blocks in sizes:
            result = measure(blocks, args.repeats)
            (op, oc), (tp, tc) = result["pt2e_quant"], result["torchao"]
            print(
                f"{f'x{blocks}':<14}{op:>10.3f}s{tp:>9.3f}s{op / tp:>8.3f}"
                f"{oc:>10.3f}s{tc:>9.3f}s{oc / tc:>8.3f}{(op + oc) / (tp + tc):>13.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
