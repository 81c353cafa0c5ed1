"""Calibration time per batch, pt2e_quant vs torchao: the prepared models' forward, interleaved.

Run from the repository root::

    .venv/bin/python benchmarks/bench_calibration.py            # ResNet-50 sizes (~2 minutes)
    .venv/bin/python benchmarks/bench_calibration.py --quick    # small models, for the tests

Each case exports one model once per side (the X86 rows on a strict export: torchao's X86
quantizer rejects the in-place residual adds of the non-strict IR), prepares it with our
quantizer and with the peer's (ExecuTorch's XNNPACKQuantizer, torchao's X86InductorQuantizer,
both through torchao's ``prepare_pt2e``), activations observed by MinMaxObserver on both sides
(each library's own class), weights per channel. Then both prepared models run the same
calibration batches under ``torch.no_grad()`` with a fixed thread count, the sides alternating
which goes first in each round so drift and background load hit both; a row reports the median
over rounds of the mean time per batch, and ``ours / torchao`` (below 1: we are faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.models.zoo_sequence import TransformerEncoder  # noqa: E402
from tests.models.zoo_vision import BottleneckResNet  # noqa: E402

SIDES = ("ours", "torchao")

#: the eps XNNPACK's and X86's presets give their activation observers
_EPS = 2**-12


def _minmax_activations(config, observer_class):
    """``config`` with its activation observers replaced by ``observer_class`` (MinMax)."""

    def swap(spec):
        if spec is None:
            return None
        ctr = observer_class.with_args(eps=_EPS)
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)

    return dataclasses.replace(
        config,
        input_activation=swap(config.input_activation),
        output_activation=swap(config.output_activation),
    )


def _quantizer(side: str, backend: str):
    if side == "ours":
        from pt2e_quant.observer import MinMaxObserver
        from quantizers import (
            X86InductorQuantizer,
            XNNPACKQuantizer,
            get_default_x86_inductor_quantization_config,
            get_symmetric_quantization_config,
        )
    else:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.observer import MinMaxObserver
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    if backend == "xnnpack":
        config = get_symmetric_quantization_config(is_per_channel=True)
        return XNNPACKQuantizer().set_global(_minmax_activations(config, MinMaxObserver))
    config = get_default_x86_inductor_quantization_config()
    return X86InductorQuantizer().set_global(_minmax_activations(config, MinMaxObserver))


def _prepare(side: str):
    if side == "ours":
        from pt2e_quant import prepare_pt2e
    else:
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e
    return prepare_pt2e


@dataclasses.dataclass
class Case:
    name: str
    backend: str
    make_model: Callable[[], torch.nn.Module]
    make_input: Callable[[], tuple[torch.Tensor, ...]]


def cases(quick: bool) -> list[Case]:
    if quick:
        resnet = lambda: BottleneckResNet(width=8, blocks=(1, 1, 1, 1), size=32)  # noqa: E731
        image = lambda: (torch.randn(1, 3, 32, 32),)  # noqa: E731
        encoder = lambda: TransformerEncoder(num_layers=2, dim=32, num_heads=2)  # noqa: E731
        tokens = lambda: (torch.randn(1, 16, 32),)  # noqa: E731
        names = ("resnet (small)", "transformer (small)")
    else:
        resnet = BottleneckResNet
        image = lambda: (torch.randn(1, 3, 224, 224),)  # noqa: E731
        # all-MiniLM-L6-v2's shape: 6 layers, hidden 384, 12 heads, 128 tokens
        encoder = lambda: TransformerEncoder(num_layers=6, dim=384, num_heads=12)  # noqa: E731
        tokens = lambda: (torch.randn(1, 128, 384),)  # noqa: E731
        names = ("resnet50", "transformer x6")
    return [
        Case(names[0], "xnnpack", resnet, image),
        Case(names[0], "x86", resnet, image),
        Case(names[1], "xnnpack", encoder, tokens),
    ]


def _prepared_models(case: Case) -> dict[str, torch.fx.GraphModule]:
    torch.manual_seed(0)
    model = case.make_model().eval()
    inputs = case.make_input()
    strict = case.backend == "x86"
    prepared = {}
    for side in SIDES:
        exported = torch.export.export(model, inputs, strict=strict).module()
        prepared[side] = _prepare(side)(exported, _quantizer(side, case.backend))
    return prepared


def _seconds_per_batch(model: torch.fx.GraphModule, batches: list[tuple]) -> float:
    start = time.perf_counter()
    for batch in batches:
        model(*batch)
    return (time.perf_counter() - start) / len(batches)


def measure(case: Case, rounds: int, batch_count: int) -> dict[str, float]:
    """Median seconds per calibration batch for each side, the sides interleaved per round."""
    prepared = _prepared_models(case)
    batches = [case.make_input() for _ in range(batch_count)]
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    with torch.no_grad():
        for side in SIDES:  # warm up: first calls allocate, initialise observers
            _seconds_per_batch(prepared[side], batches[:2])
        for index in range(rounds):
            order = SIDES if index % 2 == 0 else SIDES[::-1]
            for side in order:
                gc.collect()
                samples[side].append(_seconds_per_batch(prepared[side], batches))
    return {side: statistics.median(times) for side, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, few rounds")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=4, help="calibration batches per round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, batch_count = (3, 2) if args.quick else (args.rounds, args.batches)
    print(f"torch threads: {torch.get_num_threads()}, rounds: {rounds}, batches: {batch_count}")
    header = f"{'model':<22}{'config':<10}{'ours':>11}{'torchao':>11}{'ratio':>8}"
    print(header)
    print("-" * len(header))
    for case in cases(args.quick):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = measure(case, rounds, batch_count)
        ours, peer = result["ours"], result["torchao"]
        print(
            f"{case.name:<22}{case.backend:<10}{ours * 1e3:>9.2f}ms{peer * 1e3:>9.2f}ms"
            f"{ours / peer:>8.3f}"
        )


if __name__ == "__main__":
    main()
