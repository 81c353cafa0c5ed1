"""prepare_pt2e / convert_pt2e time, pt2e_quant vs torchao, same exported graph and annotation.

Run from the repository root::

    .venv/bin/python benchmarks/bench_core.py            # full table (a few minutes)
    .venv/bin/python benchmarks/bench_core.py --quick    # smaller sizes

For each model both libraries get a fresh export of the same module (export is not timed),
the same XNNPACK-style annotation (tests/peer_annotation.py), one calibration batch, then
convert. Times are the median of ``--repeats`` runs; the ratio column is ours / torchao, so
below 1 means we are faster. The block sweep shows how cost grows with graph size.
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

from tests.models import ConvBnReluChain, TransformerEncoder  # noqa: E402
from tests.peer_annotation import library, make_int8_quantizer  # noqa: E402

LIBRARIES = ("pt2e_quant", "torchao")


def _time_pipeline(lib_name: str, make_model: Callable[[], torch.nn.Module]) -> tuple[float, float]:
    """(prepare seconds, convert seconds) for one fresh export of the model."""
    lib = library(lib_name)
    model = make_model().eval()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    quantizer = make_int8_quantizer(lib)
    gc.collect()  # start each timed phase with the same collector state for both libraries
    start = time.perf_counter()
    prepared = lib.prepare_pt2e(exported, quantizer)
    prepare_seconds = time.perf_counter() - start
    with torch.no_grad():
        prepared(*inputs)
    gc.collect()
    start = time.perf_counter()
    lib.convert_pt2e(prepared)
    convert_seconds = time.perf_counter() - start
    return prepare_seconds, convert_seconds


def measure(make_model: Callable[[], torch.nn.Module], repeats: int) -> dict[str, tuple]:
    """Median (prepare, convert) per library; the libraries alternate so drift hits both."""
    runs: dict[str, list[tuple[float, float]]] = {lib_name: [] for lib_name in LIBRARIES}
    for _ in range(repeats):
        for lib_name in LIBRARIES:
            runs[lib_name].append(_time_pipeline(lib_name, make_model))
    return {
        lib_name: (
            statistics.median(r[0] for r in lib_runs),
            statistics.median(r[1] for r in lib_runs),
        )
        for lib_name, lib_runs in runs.items()
    }


def warm_up() -> None:
    """One untimed small run per library: first-call costs (imports, caches) are not measured."""
    for lib_name in LIBRARIES:
        _time_pipeline(lib_name, lambda: ConvBnReluChain(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    blocks = (10, 20, 40) if args.quick else (50, 100, 200)
    layers = 4 if args.quick else 24
    cases: list[tuple[str, Callable[[], torch.nn.Module]]] = [
        (f"conv-bn-relu x{n}", lambda n=n: ConvBnReluChain(n)) for n in blocks
    ]
    cases.append((f"transformer x{layers}", lambda: TransformerEncoder(num_layers=layers)))

    header = (
        f"{'model':<22}{'ours prep':>11}{'ao prep':>10}{'ratio':>8}"
        f"{'ours conv':>11}{'ao conv':>10}{'ratio':>8}{'total ratio':>13}"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm_up()
    print(header)
    print("-" * len(header))
    for name, make_model in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = measure(make_model, repeats)
        (op, oc), (tp, tc) = result["pt2e_quant"], result["torchao"]
        print(
            f"{name:<22}{op:>10.3f}s{tp:>9.3f}s{op / tp:>8.3f}"
            f"{oc:>10.3f}s{tc:>9.3f}s{oc / tc:>8.3f}{(op + oc) / (tp + tc):>13.3f}"
        )


if __name__ == "__main__":
    main()
