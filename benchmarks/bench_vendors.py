"""Vendor quantizers through both pipelines: framework time of prepare + convert, ours vs torchao.

Run from the repository root::

    .venv/bin/python benchmarks/bench_vendors.py              # full table (tens of minutes)
    .venv/bin/python benchmarks/bench_vendors.py --quick      # small models, one round
    .venv/bin/python benchmarks/bench_vendors.py --profile    # + cProfile of rows over target

Each configuration (benchmarks/vendor_setups.py) is a quantizer written against torchao's
classes, built fresh for every run. The model is exported once per row and every run gets a
deep copy, so export is not timed. A run times prepare and convert; the same calibration
batches run between them and are timed on their own.

The quantizer's own methods (``transform_for_annotation``, ``annotate``, ``validate``,
``prepare_obs_or_fq_callback``) are wrapped on the instance with one timer, the same for both
pipelines, so *framework time* = prepare + convert wall time - the quantizer's own time: what
each library adds around the vendor's code. The issue's target is ours <= 0.5x torchao's.
Convert's calls to the observers' ``calculate_qparams`` are timed the same way: a vendor's
spec names torchao's observer classes, so both pipelines run the same qparams math (the
histogram search dominates it), and ``ratio less qparams`` shows the ratio without it.

Rounds alternate which pipeline goes first and every column is a median over rounds, so load
from other processes on a shared machine hits both sides alike; ``spread`` gives the lowest
and highest per-round ratio, the noise to read the median ratio against. A row runs at least
``--min-rounds`` rounds and keeps going up to ``--rounds`` while it has used less than
``--row-seconds``, so torchao's minute-long QAT rows do not take the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import gc
import io
import math
import os
import pstats
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vendor_setups import CONFIGURATIONS, MODELS, Configuration  # noqa: E402

from tests.peer_pattern_cache import memoized_pattern_export  # noqa: E402
from tests.vendors._overlay import add_overlay_to_path  # noqa: E402

# Arm's and OpenVINO's quantizers come from the vendor overlay (.ci/vendors.sh), as in the tests.
add_overlay_to_path()

#: the issue's target for ours / torchao framework time
TARGET = 0.5
SIDES = ("torchao", "ours")

# ------------------------------------------------------------------------------- timing


class PatternExportCache:
    """Memoises torchao's ``_get_aten_graph_module_for_pattern`` while a quantizer's own code runs.

    Some vendors' annotators (CoreML's, XNNPACK's conv-bn ones) ``torch.export`` the same
    search patterns on every call: hundreds of exports, minutes per call on a loaded machine.
    That is quantizer-own time, subtracted either way, so the benchmark keeps the first export
    of each pattern (tests/peer_pattern_cache.py) and hands out deep copies. Only the
    quantizer's calls see the cache: torchao's framework (its QAT conv-bn fusion re-exports
    patterns too) runs uncached, as users run it. ``--uncached`` turns it off.
    """

    NAME = "_get_aten_graph_module_for_pattern"

    def __init__(self) -> None:
        self.original: Callable | None = None
        self.cached: Callable | None = None
        self._users: list[Any] = []  # every module that imported the function by name
        self._scanned = 0  # len(sys.modules) when _users was found

    def __enter__(self) -> None:
        if self.original is None:
            utils = sys.modules.get("torchao.quantization.pt2e.utils")
            if utils is None:
                return
            self.original = getattr(utils, self.NAME)
            self.cached = memoized_pattern_export(self.original)
        if len(sys.modules) != self._scanned:
            self._users = [
                module
                for module in list(sys.modules.values())
                if getattr(module, "__dict__", {}).get(self.NAME) is self.original
            ]
            self._scanned = len(sys.modules)
        for module in self._users:
            setattr(module, self.NAME, self.cached)

    def __exit__(self, *exc_info: Any) -> None:
        for module in self._users:
            setattr(module, self.NAME, self.original)


class Stopwatch:
    """One timer around methods wrapped on instances (a call made inside a timed call counts
    once), optionally run inside a context such as :class:`PatternExportCache`."""

    def __init__(self, around: PatternExportCache | None = None) -> None:
        self.seconds = 0.0
        self._depth = 0
        self._around = around

    def wrap(self, instance: Any, names: tuple[str, ...]) -> None:
        for name in names:
            method = getattr(instance, name, None)
            if callable(method):
                setattr(instance, name, self._timed(method))

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth > 0:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                with self._around or nullcontext():
                    return method(*args, **kwargs)
            finally:
                self._depth -= 1
                self.seconds += time.perf_counter() - start

        return timed


#: the quantizer's own methods that prepare calls
QUANTIZER_METHODS = (
    "transform_for_annotation",
    "annotate",
    "validate",
    "prepare_obs_or_fq_callback",
)


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr: some vendors print set-up chatter to stdout (QNN's SDK
    download attempt, through a handler bound at import), which would break the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _pipeline(side: str, qat: bool) -> tuple[Callable, Callable]:
    if side == "ours":
        import pt2e_quant

        prepare = pt2e_quant.prepare_qat_pt2e if qat else pt2e_quant.prepare_pt2e
        return prepare, pt2e_quant.convert_pt2e
    from torchao.quantization.pt2e import quantize_pt2e

    prepare = quantize_pt2e.prepare_qat_pt2e if qat else quantize_pt2e.prepare_pt2e
    return prepare, quantize_pt2e.convert_pt2e


@dataclass
class Run:
    """Seconds of one prepare / calibrate / convert."""

    wall: float  # prepare + convert
    quantizer: float  # of which in the quantizer's own methods
    qparams: float  # of which in convert's calls to the observers' calculate_qparams
    calibrate: float

    @property
    def framework(self) -> float:
        return self.wall - self.quantizer

    @property
    def framework_less_qparams(self) -> float:
        return self.framework - self.qparams


@dataclass
class Case:
    """One (configuration, model) row: the exported graph every run copies, and its batches."""

    configuration: Configuration
    model_name: str
    exported: torch.fx.GraphModule
    batches: list[tuple]
    pattern_cache: PatternExportCache | None

    def run(self, side: str, profiler: cProfile.Profile | None = None) -> Run:
        """One prepare / calibrate / convert; ``profiler`` records prepare and convert only."""
        prepare, convert = _pipeline(side, self.configuration.qat)
        model = copy.deepcopy(self.exported)
        with stdout_to_stderr():
            quantizer = self.configuration.make_quantizer()
        quantizer_clock = Stopwatch(around=self.pattern_cache)
        quantizer_clock.wrap(quantizer, QUANTIZER_METHODS)
        recording = profiler if profiler is not None else nullcontext()
        gc.collect()
        with recording:
            start = time.perf_counter()
            prepared = prepare(model, quantizer)
            wall = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            for batch in self.batches:
                prepared(*batch)
        calibrate = time.perf_counter() - start
        qparams_clock = Stopwatch()
        for module in prepared.modules():
            qparams_clock.wrap(module, ("calculate_qparams",))
        gc.collect()
        with recording:
            start = time.perf_counter()
            convert(prepared)
            wall += time.perf_counter() - start
        return Run(wall, quantizer_clock.seconds, qparams_clock.seconds, calibrate)


def build_case(
    configuration: Configuration,
    model_name: str,
    quick: bool,
    batches: int,
    pattern_cache: PatternExportCache | None,
) -> Case:
    torch.manual_seed(0)
    model = MODELS[model_name][1 if quick else 0]()
    model = model.train() if configuration.qat else model.eval()
    example = model.example_inputs()
    program = torch.export.export(model, example, strict=configuration.strict)
    exported = program.module(check_guards=configuration.check_guards)
    generator = torch.Generator().manual_seed(1)
    data = [example] + [
        tuple(
            torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
            for t in example
        )
        for _ in range(batches - 1)
    ]
    return Case(configuration, model_name, exported, data, pattern_cache)


@dataclass
class Row:
    case: Case
    runs: dict[str, list[Run]]

    def median(self, side: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in self.runs[side])

    def ratio_of(self, field: str) -> float:
        return self.median("ours", field) / self.median("torchao", field)

    @property
    def ratio(self) -> float:
        return self.ratio_of("framework")

    @property
    def spread(self) -> tuple[float, float]:
        ratios = [
            ours.framework / theirs.framework
            for ours, theirs in zip(self.runs["ours"], self.runs["torchao"], strict=True)
        ]
        return min(ratios), max(ratios)


def measure(case: Case, min_rounds: int, max_rounds: int, budget: float, warm_up: bool) -> Row:
    """Rounds of both pipelines, the first side alternating round by round."""
    if warm_up:  # first-call costs (lazy imports, caches) are not measured
        for side in SIDES:
            case.run(side)
    runs: dict[str, list[Run]] = {side: [] for side in SIDES}
    start = time.perf_counter()
    index = 0
    while index < min_rounds or (index < max_rounds and time.perf_counter() - start < budget):
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            runs[side].append(case.run(side))
        index += 1
    return Row(case, runs)


# ------------------------------------------------------------------------------- report


def _unavailable(configuration: Configuration) -> str | None:
    """Why the configuration cannot run here (its quantizer does not import), or None."""
    try:
        with stdout_to_stderr():
            configuration.make_quantizer()
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return None


HEADER = (
    "| configuration | model | torchao framework ms | ours framework ms | ratio | spread "
    "| rounds | quantizer-own ms (torchao / ours) | qparams ms (torchao / ours) "
    "| ratio less qparams | calibrate ms (torchao / ours) |"
)


def format_row(row: Row) -> str:
    def ms(side: str, field: str) -> str:
        return f"{row.median(side, field) * 1e3:.1f}"

    low, high = row.spread
    mark = " !" if row.ratio > TARGET else ""
    return (
        f"| {row.case.configuration.name} | {row.case.model_name} "
        f"| {ms('torchao', 'framework')} | {ms('ours', 'framework')} "
        f"| {row.ratio:.3f}{mark} | {low:.2f}-{high:.2f} | {len(row.runs['ours'])} "
        f"| {ms('torchao', 'quantizer')} / {ms('ours', 'quantizer')} "
        f"| {ms('torchao', 'qparams')} / {ms('ours', 'qparams')} "
        f"| {row.ratio_of('framework_less_qparams'):.3f} "
        f"| {ms('torchao', 'calibrate')} / {ms('ours', 'calibrate')} |"
    )


def _where(filename: str) -> str:
    for root in (f"{REPO}/", "/site-packages/"):
        if root in filename:
            return filename.split(root, 1)[1]
    return filename


def profile(case: Case, top: int) -> str:
    """Where our prepare + convert spends its time with this quantizer: pt2e_quant's functions
    by cumulative time, then every function by own time (the quantizer's own code included)."""
    profiler = cProfile.Profile()
    run = case.run("ours", profiler)
    entries = [
        (cumulative, own, calls, f"{_where(file)}:{line}({name})")
        for (file, line, name), (_, calls, own, cumulative, _) in pstats.Stats(
            profiler
        ).stats.items()
    ]
    lines = [
        f"prepare + convert {run.wall * 1e3:.0f} ms under the profiler, of which the "
        f"quantizer's own methods {run.quantizer * 1e3:.0f} ms",
        "pt2e_quant by cumulative ms (calls):",
    ]
    ours = sorted((e for e in entries if e[3].startswith("pt2e_quant/")), reverse=True)
    lines += [f"  {c * 1e3:8.1f}  ({n:>6})  {where}" for c, _, n, where in ours[:top]]
    lines.append("all functions by own ms (calls):")
    by_own = sorted(entries, key=lambda e: e[1], reverse=True)
    lines += [f"  {o * 1e3:8.1f}  ({n:>6})  {where}" for _, o, n, where in by_own[:top]]
    return "\n".join(lines)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    parser.add_argument("--rounds", type=int, default=9, help="most timed rounds per row")
    parser.add_argument("--min-rounds", type=int, default=3, help="fewest timed rounds per row")
    parser.add_argument("--row-seconds", type=float, default=60.0, help="a row's round budget")
    parser.add_argument("--batches", type=int, default=4, help="calibration batches per run")
    parser.add_argument(
        "--only", nargs="*", default=[], help="run configurations whose name contains any of these"
    )
    parser.add_argument("--list", action="store_true", help="print the configurations' names")
    parser.add_argument("--profile", action="store_true", help="cProfile rows above the target")
    parser.add_argument("--top", type=int, default=20, help="functions per profile listing")
    parser.add_argument(
        "--uncached", action="store_true", help="quantizers re-export search patterns every call"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: steadier when shared)"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (default: each in a fresh one)",
    )
    parser.add_argument("--configuration", default=None, help=argparse.SUPPRESS)  # a child's
    return parser.parse_args()


def run_configurations(args: argparse.Namespace, selected: list[Configuration]) -> None:
    """Measure ``selected`` here; print their rows, then skip notes and profiles as
    ``skipped ...`` and ``## profile`` blocks (the parent process passes them through)."""
    rounds = (1, 1) if args.quick else (args.min_rounds, max(args.rounds, args.min_rounds))
    torch.set_num_threads(args.threads)
    cache = None if args.uncached else PatternExportCache()
    rows: list[Row] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for configuration in selected:
            reason = _unavailable(configuration)
            if reason is not None:
                print(f"skipped {configuration.name}: {reason}", flush=True)
                continue
            models = configuration.models[-1:] if args.quick else configuration.models
            for model_name in models:
                case = build_case(configuration, model_name, args.quick, args.batches, cache)
                try:
                    row = measure(case, *rounds, args.row_seconds, warm_up=not args.quick)
                except Exception as error:  # a pipeline that cannot run this pair: say why
                    first_line = str(error).splitlines()[0] if str(error) else ""
                    print(
                        f"skipped {configuration.name} on {model_name}: "
                        f"{type(error).__name__}: {first_line}",
                        flush=True,
                    )
                    continue
                rows.append(row)
                print(format_row(row), flush=True)
        if args.profile:
            for row in rows:
                if row.ratio > TARGET:
                    print(f"\n## profile: {row.case.configuration.name} on {row.case.model_name}")
                    print(profile(row.case, args.top), flush=True)


def _child_command(args: argparse.Namespace, name: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--configuration", name]
    for flag in ("quick", "profile", "uncached"):
        if getattr(args, flag):
            command.append(f"--{flag}")
    for option in ("rounds", "min_rounds", "row_seconds", "batches", "top", "threads"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    return command


def main() -> None:
    args = _arguments()
    if args.configuration is not None:
        run_configurations(args, [c for c in CONFIGURATIONS if c.name == args.configuration])
        return
    if args.list:
        print("\n".join(c.name for c in CONFIGURATIONS))
        return
    selected = [c for c in CONFIGURATIONS if not args.only or any(o in c.name for o in args.only)]
    print(f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(HEADER)
    print("|" + "---|" * HEADER.count(" |"))
    outputs: list[list[str]] = []
    if args.in_process:
        with contextlib.redirect_stdout(io.StringIO()) as captured:
            run_configurations(args, selected)
        outputs.append(captured.getvalue().splitlines())
        for line in outputs[-1]:
            if line.startswith("| "):
                print(line)
    else:
        # Each configuration in a fresh interpreter: rows measured late in one long-lived
        # process (gigabytes of heap from earlier vendors) were several times noisier.
        for configuration in selected:
            child = subprocess.run(
                _child_command(args, configuration.name),
                stdout=subprocess.PIPE,
                text=True,
                check=False,
            )
            lines = child.stdout.splitlines()
            if child.returncode != 0:
                lines.append(f"skipped {configuration.name}: exit code {child.returncode}")
            for line in lines:
                if line.startswith("| "):
                    print(line, flush=True)
            outputs.append(lines)
    rows = [line for lines in outputs for line in _before_profiles(lines) if line.startswith("| ")]
    ratios = [float(line.split("|")[5].split()[0]) for line in rows]
    print(
        f"\nframework = prepare + convert wall time - the quantizer's own methods; medians over "
        "rounds that alternate which pipeline runs first; spread = lowest-highest per-round "
        f"ratio; ! = above the {TARGET} target. Load average at end {os.getloadavg()[0]:.1f}."
    )
    if ratios:
        geomean = math.exp(statistics.fmean(math.log(ratio) for ratio in ratios))
        print(f"geometric mean ratio {geomean:.3f} over {len(ratios)} rows")
    for lines in outputs:
        for line in _before_profiles(lines):
            if line.startswith("skipped "):
                print(line)
    for lines in outputs:  # a child's profiles come last in its output
        profiles = lines[len(_before_profiles(lines)) :]
        if profiles:
            print("\n" + "\n".join(profiles))


def _before_profiles(lines: list[str]) -> list[str]:
    """A run's output up to its first ``## profile`` block (rows and skip notes; anything
    else there is a vendor's own printing)."""
    for index, line in enumerate(lines):
        if line.startswith("## profile"):
            return lines[:index]
    return lines


if __name__ == "__main__":
    main()
