"""Data-parallel calibration on this machine: one process vs two (gloo), and the merge's cost.

Run from the repository root::

    .venv/bin/python benchmarks/bench_distributed.py            # ResNet-50 sizes (~3 minutes)
    .venv/bin/python benchmarks/bench_distributed.py --quick    # small model, for the tests

The model is observer-heavy: a ResNet-50-shaped bottleneck net under XNNPACK's static int8
config (per-channel weight observers, one activation observer per op output: min/max, or
torch.ao-style histograms, the costliest state to merge). The same ``--batches`` batches are
calibrated by

* one process with one intra-op thread (the baseline of the "vs 1x1" column), and with
  ``--threads`` (all cores in one process);
* ``world`` processes (gloo, one intra-op thread each, since the cores are shared), each on
  every ``world``-th batch, then ``sync_observers`` merging every observer.

Each rank prepares the model untimed, waits at a barrier, then times its calibration and its
merge. A row reports the wall time from the barrier until the slowest rank has merged,
batches per second, and the merge alone (seconds and bytes each rank sent). The closing line
fits the model of N machines the closing note quotes: calibration divides by N, the merge
gathers every rank's statistics (``all_gather_object``: each rank receives (N - 1) payloads).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.models.zoo_vision import BottleneckResNet  # noqa: E402

_EPS = 2**-12


def _image_size(args: argparse.Namespace) -> int:
    return 32 if args.quick else 224


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if args.quick:
        return BottleneckResNet(width=8, blocks=(1, 1, 1, 1), size=32, num_classes=10)
    return BottleneckResNet()


def _quantizer(observer: str):
    from pt2e_quant.observer import HistogramObserver, MinMaxObserver
    from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True)
    ctr = (MinMaxObserver if observer == "minmax" else HistogramObserver).with_args(eps=_EPS)

    def swap(spec):
        return None if spec is None else dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)

    config = dataclasses.replace(
        config,
        input_activation=swap(config.input_activation),
        output_activation=swap(config.output_activation),
    )
    return XNNPACKQuantizer().set_global(config)


def _batches(args: argparse.Namespace) -> list[tuple[torch.Tensor]]:
    """The whole calibration set (every run, every rank, regenerates the same one)."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch_size, 3, _image_size(args), _image_size(args))
    return [(torch.randn(shape, generator=generator),) for _ in range(args.batches)]


def _prepared(args: argparse.Namespace) -> torch.fx.GraphModule:
    from pt2e_quant import prepare_pt2e

    torch.manual_seed(0)
    example = (torch.randn(args.batch_size, 3, _image_size(args), _image_size(args)),)
    exported = torch.export.export(_model(args).eval(), example).module()
    return prepare_pt2e(exported, _quantizer(args.observer))


def _warmed_up(args: argparse.Namespace, batches: list[tuple[torch.Tensor]]):
    """A freshly prepared model, after one batch through an identical one: first-call costs
    stay out of the timing, and the timed observers start empty."""
    from pt2e_quant.pipeline.calibration import calibrate

    with torch.no_grad():
        calibrate(_prepared(args), batches[:1], batches[0], progress=False)
    return _prepared(args)


def _rank(rank: int, world: int, store: str, args: argparse.Namespace, results: str) -> None:
    from pt2e_quant.distributed.calibration import sync_observers
    from pt2e_quant.pipeline.calibration import calibrate

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )  # fmt: skip
    shard = _batches(args)[rank::world]
    prepared = _warmed_up(args, shard)
    with torch.no_grad():
        dist.barrier()
        start = time.perf_counter()
        calibrate(prepared, shard, shard[0], progress=False)
        calibrated = time.perf_counter()
        report = sync_observers(prepared)
        merged = time.perf_counter()
    dist.barrier()
    wall = time.perf_counter() - start
    line = f"{calibrated - start} {merged - calibrated} {report.payload_bytes} {wall}"
    Path(results, f"rank{rank}").write_text(line)
    dist.destroy_process_group()


def _run_world(world: int, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as directory:
        store = os.path.join(directory, "store")
        mp.start_processes(
            _rank, args=(world, store, args, directory), nprocs=world, start_method="spawn"
        )
        rows = [Path(directory, f"rank{r}").read_text().split() for r in range(world)]
    calibrate_s, merge_s, sent, wall = (max(float(row[i]) for row in rows) for i in range(4))
    return {"calibrate": calibrate_s, "merge": merge_s, "bytes": sent, "wall": wall}


def _one_process(args: argparse.Namespace, threads: int) -> dict[str, float]:
    from pt2e_quant.pipeline.calibration import calibrate

    torch.set_num_threads(threads)
    batches = _batches(args)
    prepared = _warmed_up(args, batches)
    with torch.no_grad():
        start = time.perf_counter()
        calibrate(prepared, batches, batches[0], progress=False)
        wall = time.perf_counter() - start
    return {"calibrate": wall, "merge": 0.0, "bytes": 0.0, "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and data")
    parser.add_argument("--batches", type=int, default=None, help="calibration batches in all")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--world", type=int, default=2, help="processes in the parallel run")
    parser.add_argument("--threads", type=int, default=2, help="one process's intra-op threads")
    parser.add_argument(
        "--observers", nargs="+", default=["minmax", "histogram"], choices=["minmax", "histogram"]
    )
    args = parser.parse_args()
    args.batches = args.batches or (4 if args.quick else 32)
    args.batch_size = args.batch_size or (2 if args.quick else 4)
    warnings.simplefilter("ignore")
    print(f"{args.batches} batches of {args.batch_size}, model: "
          f"{'small bottleneck net' if args.quick else 'ResNet-50-shaped'}")  # fmt: skip
    header = f"{'observers':<10} {'processes':>9} {'wall s':>8} {'batch/s':>8} {'merge s':>8} "
    print(header + f"{'sent KB':>8} {'vs 1x1':>8}")
    for observer in args.observers:
        args.observer = observer
        rows = [(f"1 x {t} thr", _one_process(args, t)) for t in sorted({1, args.threads})]
        parallel = _run_world(args.world, args)
        rows.append((f"{args.world} x 1 thr", parallel))
        baseline = rows[0][1]["wall"]  # one process, one thread
        for label, row in rows:
            print(
                f"{observer:<10} {label:>9} {row['wall']:>8.2f} {args.batches / row['wall']:>8.2f} "
                f"{row['merge']:>8.3f} {row['bytes'] / 1024:>8.1f} {baseline / row['wall']:>8.2f}",
                flush=True,
            )
        per_batch = baseline / args.batches
        print(
            f"{observer:<10} model of N machines: wall(N) = {args.batches} x {per_batch:.4f} s / N"
            f" + merge(N), merge(N) ~ {parallel['merge']:.3f} s x (N - 1) "
            f"(each rank receives N - 1 payloads of {parallel['bytes'] / 1024:.0f} KB)"
        )


if __name__ == "__main__":
    main()
