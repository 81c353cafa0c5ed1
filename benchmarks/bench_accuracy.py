"""Accuracy on real weights and real data: float vs torchao's stock config vs ours, each
accuracy algorithm alone, their combination, and the accuracy-aware fallback.

Run from the repository root::

    .venv/bin/python benchmarks/bench_accuracy.py            # full tables (~15 minutes)
    .venv/bin/python benchmarks/bench_accuracy.py --quick    # small splits, for the test suite

Every row is XNNPACK static int8 (``get_symmetric_quantization_config()``, the stock config:
per-tensor weights) calibrated on the same calibration split and scored on a held-out split
(benchmarks/accuracy_tasks.py: MiniLM sentence embeddings, digits CNN). "torchao" is
ExecuTorch's XNNPACKQuantizer through torchao's prepare/convert (on transformers' graphs
after precomputing the mask's index arithmetic, without which it crashes); our rows run
``pt2e_quant.quantize()`` with the knob named in the row. The last table compares the
fallback's search with greedy removal over the same sensitivity ranking, for several output-SQNR
targets, with the stock config and with the combination's algorithms around the fallback:
units, compute ops ("float ops": those explain() reports as "kept float to meet the accuracy
target") and graph nodes (the compute ops plus the views / dropouts sharing their qparams)
kept float, and candidates verified.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy_tasks import Task, digits_task, minilm_task  # noqa: E402
from pt2e_quant import quantize  # noqa: E402
from pt2e_quant.algorithms.accuracy_fallback import accuracy_fallback  # noqa: E402
from pt2e_quant.algorithms.overrides import KEPT_FOR_TARGET  # noqa: E402
from pt2e_quant.algorithms.recipe import AccuracyOptions, candidate_builder  # noqa: E402
from pt2e_quant.algorithms.smooth_quant import smooth_quant  # noqa: E402
from pt2e_quant.coverage import explain  # noqa: E402
from pt2e_quant.debug.sensitivity import output_sqnr  # noqa: E402
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config  # noqa: E402
from quantizers.xnnpack.fold_index_arithmetic import fold_index_arithmetic  # noqa: E402

#: our rows: label -> quantize() keyword arguments
OUR_ROWS: dict[str, dict[str, Any]] = {
    "pt2e_quant stock": {},
    "+ range_estimator=percentile": {"range_estimator": "percentile"},
    "+ range_estimator=mse": {"range_estimator": "mse"},
    "+ range_estimator=kl": {"range_estimator": "kl"},
    "+ weight_range_estimator=mse": {"weight_range_estimator": "mse"},
    "+ smooth_quant=0.5": {"smooth_quant": 0.5},
    "+ bias_correction": {"bias_correction": True},
}
#: per-tensor weight MSE is left out: on MiniLM it clips the FFN's outlier weights (range 1.49
#: clipped to 0.66), and bias correction measured from float inputs then over-corrects the
#: layers downstream (docs/accuracy.md)
COMBINATION = {"smooth_quant": 0.5, "range_estimator": "mse", "bias_correction": True}


#: the fallback row's target on the calibration split's score (MiniLM: embedding cosine)
FALLBACK_TARGET = 0.99


def _stock() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config())


def _torchao_model(task: Task) -> torch.fx.GraphModule:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer as PeerQuantizer,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        get_symmetric_quantization_config as peer_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(task.model, task.example_inputs).module()
    # The peer's prepared model crashes on transformers' attention-mask index arithmetic
    # (arange + constant feeding aten.index: "tensors used as indices must be long"); it
    # gets the graph with that input-independent arithmetic precomputed, the one change.
    fold_index_arithmetic(exported)
    exported.recompile()
    prepared = prepare_pt2e(exported, PeerQuantizer().set_global(peer_config()))
    with torch.no_grad():
        for batch in task.calibration:
            prepared(*batch)
    return convert_pt2e(prepared)


def _ours(task: Task, **knobs: Any) -> Any:
    return quantize(task.model, task.example_inputs, _stock(), calibration=task.calibration,
                    progress=False, **knobs)  # fmt: skip


def _sqnr(task: Task, model: Any) -> float:
    with torch.no_grad():
        reference = [task.model(*b) for b in task.held_out]
        return output_sqnr(reference, [model(*b) for b in task.held_out])


def _row(label: str, task: Task, model: Any, seconds: float, float_ops: str = "-") -> str:
    return (
        f"{label:<32} {task.score(model):>9.4f} {_sqnr(task, model):>9.2f} "
        f"{float_ops:>9} {seconds:>8.1f}"
    )


#: the rows --quick keeps (the test suite checks the report's shape, not every estimator)
QUICK_ROWS = (
    "pt2e_quant stock",
    "+ range_estimator=mse",
    "+ smooth_quant=0.5",
    "+ bias_correction",
)


def accuracy_table(task: Task, quick: bool = False) -> Iterator[str]:
    """The table's lines, each yielded as soon as its row is measured."""
    yield from [f"## {task.name}: {task.score_name} on held-out data",
             f"{'config':<32} {task.score_name:>9} {'SQNR dB':>9} {'kept ops':>9} {'seconds':>8}",
             _row("float", task, task.model, 0.0)]  # fmt: skip
    start = time.perf_counter()
    peer = _torchao_model(task)
    yield _row("torchao stock (ExecuTorch XNNPACK)", task, peer, time.perf_counter() - start)
    rows = [(k, v) for k, v in OUR_ROWS.items() if not quick or k in QUICK_ROWS]
    rows.append(("combination", COMBINATION))
    if task.calibration_score is not None:
        # the fallback is tuned on the calibration split; the table scores the held-out one
        target = {"target": FALLBACK_TARGET, "metric": task.calibration_score}
        rows.append((f"combination + target {FALLBACK_TARGET}", {**COMBINATION, **target}))
    for label, knobs in rows:
        start = time.perf_counter()
        result = _ours(task, **knobs)
        seconds = time.perf_counter() - start
        kept = result.coverage.counts.get("kept float", 0)
        yield _row(label, task, result.module, seconds, str(kept))


def _fallback_pipeline(task: Task, config: str) -> tuple[torch.fx.GraphModule, Any, Any]:
    """(float graph, quantizer ranked by sensitivity, build of one candidate) for the stock
    config, or for the combination's algorithms around the fallback exactly as quantize()
    runs them (SmoothQuant on the float graph, then the recipe's candidate build)."""
    gm = torch.export.export(task.model, task.example_inputs).module()
    if config == "stock":
        return gm, _stock(), None
    options = AccuracyOptions(
        range_estimator=COMBINATION["range_estimator"],
        bias_correction=COMBINATION["bias_correction"],
    )
    smooth_quant(gm, task.calibration, alpha=COMBINATION["smooth_quant"])
    quantizer, build = candidate_builder(gm, _stock(), task.calibration, options)
    return gm, quantizer, build


def fallback_table(task: Task, target_gains_db: list[float], config: str = "stock") -> list[str]:
    """Greedy removal vs our search over one sensitivity ranking, for each SQNR target."""
    gm, quantizer, build = _fallback_pipeline(task, config)
    common = dict(
        calibration=task.calibration, validation=task.held_out, build=build, progress=False
    )
    full = accuracy_fallback(gm, quantizer, target=-1e9, **common)
    ranking = None
    lines = [f"## {task.name}, {config}: fallback to output SQNR targets "
             f"(all quantized: {full.chosen.score:.2f} dB)",
             f"{'strategy':<12} {'target':>7} {'met':>5} {'float units':>11} {'float ops':>9} "
             f"{'float nodes':>11} {'SQNR dB':>9} {'candidates':>10} {task.score_name:>9}"]  # fmt: skip
    for gain in target_gains_db:
        target = full.chosen.score + gain
        greedy = accuracy_fallback(
            gm, quantizer, target=target, strategy="greedy", ranking=ranking, **common
        )
        ranking = greedy.ranking
        searched = accuracy_fallback(gm, quantizer, target=target, ranking=ranking, **common)
        for name, result in (("greedy", greedy), ("search", searched)):
            # the fallback's own ops: SmoothQuant's multiplies are kept float in both
            rows = explain(result.module, _stock()).rows
            kept = sum(not row.quantized and row.reason == KEPT_FOR_TARGET for row in rows)
            lines.append(
                f"{name:<12} {target:>7.2f} {str(result.met):>5} "
                f"{len(result.chosen.float_units):>11} {kept:>9} {len(result.float_nodes):>11} "
                f"{result.chosen.score:>9.2f} "
                f"{result.evaluations:>10} {task.score(result.module):>9.4f}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small splits (the test suite's run)")
    parser.add_argument(
        "--tasks", nargs="+", default=["digits", "minilm"], choices=["digits", "minilm"]
    )
    parser.add_argument("--target-gains", type=float, nargs="+", default=[3.0, 6.0, 10.0],
                        help="fallback targets: dB above the all-quantized SQNR")  # fmt: skip
    parser.add_argument("--fallback-configs", nargs="+", default=["stock", "combination"],
                        choices=["stock", "combination"],
                        help="the fallback table's configurations")  # fmt: skip
    parser.add_argument("--fallback-only", action="store_true",
                        help="only the fallback strategies' table")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    warnings.simplefilter("ignore")
    tasks = []
    if "digits" in args.tasks:
        tasks.append(digits_task(calibration_batches=2 if args.quick else 8,
                                 epochs=3 if args.quick else 25))  # fmt: skip
    if "minilm" in args.tasks:
        tasks.append(minilm_task(16, 16) if args.quick else minilm_task(64, 192))
    for task in tasks:
        if not args.fallback_only:
            for line in accuracy_table(task, quick=args.quick):
                print(line, flush=True)
            print(flush=True)
        for config in args.fallback_configs:
            print("\n".join(fallback_table(task, args.target_gains, config)), flush=True)
            print(flush=True)
        print(flush=True)


if __name__ == "__main__":
    main()
