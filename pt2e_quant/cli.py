"""``pt2e-quant`` (also ``python -m pt2e_quant``): quantize a model, or explain its coverage.

::

    pt2e-quant quantize MODEL [--backend {xnnpack,x86,...}] [--per-tensor] [--dynamic]
        [--input-shape 1,3,224,224] [--calibration-batches N] [--calibration-data FILE.pt]
        --output OUT.pt2 [--pte OUT.pte] [--report REPORT.html] [--explain]
    pt2e-quant explain MODEL [--backend {xnnpack,x86,...}] [same model and data options]

``--backend`` takes any installed backend (:mod:`pt2e_quant.contract.backends`) and defaults
to the API's default (:data:`pt2e_quant.quantize_model.DEFAULT_BACKEND`); the quantizer comes
from :func:`~pt2e_quant.quantize_model.preset_quantizer`, as in ``quantize()``, so
``--dynamic`` means what ``quantize(..., dynamic=True)`` means. The saved ``.pt2`` calls
``quantized_decomposed`` ops: load it with ``pt2e_quant.load`` (the CLI says so).

Exit codes: 0 success; 2 usage error (a bad argument: unknown option, a MODEL that does not
resolve, an unwritable output path, ...); 1 failure (export, calibration, lowering), with a
one-line reason. ``--debug`` shows the Python traceback. Every argument is checked before
the slow work starts, so a typo in ``--output`` costs a second, not a calibration run.
Messages go to stderr; the coverage table (``--explain``, ``explain``) goes to stdout.

Under ``torchrun --nproc-per-node N -m pt2e_quant quantize ...`` every rank joins the process
group torchrun describes, calibrates on its share of the batches (every N-th one, after
``--calibration-batches`` has cut the list), and the observers are merged across ranks
(``docs/distributed.md``); only rank 0 prints and writes the files, each written to a
temporary name and renamed, so a failure never leaves a half-written artifact.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from pt2e_quant.algorithms.range_estimation import ACTIVATION_ESTIMATORS, WEIGHT_ESTIMATORS
from pt2e_quant.contract.backends import get_backend, installed_backends
from pt2e_quant.distributed.collectives import World
from pt2e_quant.distributed.launch import (
    is_writer,
    joined_from_environment,
    shard,
    write_atomically,
)
from pt2e_quant.pipeline.calibration import load_batches, random_batches
from pt2e_quant.quantize_model import DEFAULT_BACKEND, preset_quantizer, quantize

__all__ = ["UsageError", "build_parser", "load_hint", "load_model", "main"]

PROG = "pt2e-quant"
DEFAULT_CALIBRATION_BATCHES = 8
DEFAULT_CALLABLE = "get_model"
INSTALL_EXECUTORCH = "install executorch (pip install executorch==1.5.1) to write .pte"

_MODEL_HELP = (
    "package.module:callable or path/to/file.py[:callable] (a bare .py path uses the callable "
    "'get_model'); the callable returns an nn.Module or (module, example_inputs)"
)
_DATA_HELP = (
    "torch.save'd calibration data: a tensor with the batch dimension first (split into "
    "batches the size of the example input's first dimension), or a list of batches, each a "
    "tensor or a tuple of tensors"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Quantize a PyTorch model with PT2E, and explain which ops stay float.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    quantize = commands.add_parser(
        "quantize", help="export, calibrate and quantize MODEL; write a .pt2 (and .pte)"
    )
    _add_model_options(quantize)
    quantize.add_argument(
        "--output",
        required=True,
        type=Path,
        metavar="OUT.pt2",
        help="where to torch.export.save the quantized program (load it with pt2e_quant.load)",
    )
    quantize.add_argument(
        "--pte",
        type=Path,
        metavar="OUT.pte",
        help="also lower to an ExecuTorch .pte with the backend's partitioner",
    )
    quantize.add_argument(
        "--report",
        type=Path,
        metavar="REPORT.html",
        help="write the per-op numeric report (float vs quantized) as HTML",
    )
    quantize.add_argument(
        "--explain",
        action="store_true",
        help="print the coverage table (which ops stay float, and why)",
    )
    explain = commands.add_parser(
        "explain", help="quantize MODEL in memory and print the coverage table only"
    )
    _add_model_options(explain)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=_MODEL_HELP)
    backends = installed_backends()
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=list(backends),
        help="preset quantizer: "
        + ", ".join(f"{b.name} ({b.description or b.title})" for b in backends.values())
        + f" (default: {DEFAULT_BACKEND})",
    )
    per_tensor = [b.name for b in backends.values() if b.supports_per_tensor]
    parser.add_argument(
        "--per-tensor",
        action="store_true",
        help=f"per-tensor instead of per-channel weights ({', '.join(per_tensor)} only)",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic quantization: activation ranges computed at run time",
    )
    parser.add_argument(
        "--input-shape",
        action="append",
        type=parse_shape,
        metavar="SHAPE",
        help="e.g. 1,3,224,224: random float example input of this shape; "
        "repeat once per input; overrides inputs MODEL returns",
    )
    parser.add_argument(
        "--calibration-batches",
        type=_positive_int,
        metavar="N",
        help=f"random calibration batches (default {DEFAULT_CALIBRATION_BATCHES}),"
        " or at most N batches of --calibration-data",
    )
    parser.add_argument("--calibration-data", type=Path, metavar="FILE.pt", help=_DATA_HELP)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    _add_accuracy_options(parser)


def _add_accuracy_options(parser: argparse.ArgumentParser) -> None:
    """quantize()'s accuracy knobs (docs/accuracy.md), one flag each."""
    group = parser.add_argument_group("accuracy (post-training; docs/accuracy.md)")
    group.add_argument(
        "--range-estimator",
        choices=ACTIVATION_ESTIMATORS,
        help="how activation ranges are measured (default: the backend's own observers)",
    )
    group.add_argument(
        "--weight-range-estimator",
        choices=WEIGHT_ESTIMATORS,
        help="how weight ranges are measured (default: the backend's own observers)",
    )
    group.add_argument(
        "--smooth-quant",
        type=float,
        metavar="ALPHA",
        help="SmoothQuant: migrate linear inputs' outlier channels into the weights (0..1)",
    )
    group.add_argument(
        "--bias-correction",
        action="store_true",
        help="fold each conv / linear's measured mean output shift into its bias",
    )
    group.add_argument(
        "--target-sqnr",
        type=float,
        metavar="DB",
        help="keep the fewest ops float that bring the output SQNR vs float to DB",
    )
    group.add_argument(
        "--max-float-ops",
        type=_non_negative_int,
        metavar="N",
        help="with --target-sqnr: keep at most N units (an op and what it fuses) float",
    )


class UsageError(Exception):
    """A command-line argument is wrong: exit code 2, the message names the argument."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> ``(1, 3, 224, 224)``."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 1,3,224,224, got {text!r}"
        )
    return shape


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (argparse exits 2 on its own errors)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # ExecuTorch 1.5 still builds torch's deprecated LeafSpec: noise the user cannot
            # act on, raised from several places (import, lowering, serialization).
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            return _run(args)
    except UsageError as error:
        _say(f"error: {error}")
        return 2
    except Exception as error:  # the CLI's job: any failure becomes one line, exit 1
        if args.debug:
            traceback.print_exc()
        _say(f"error: {_one_line(error)}")
        return 1


def _run(args: argparse.Namespace) -> int:
    with joined_from_environment() as here:
        return _run_on_rank(args, here)


def _run_on_rank(args: argparse.Namespace, here: World | None) -> int:
    outputs = _check_arguments(args, writer=is_writer(here))
    quantizer = _preset(args)
    model, example_inputs = load_model(args.model)
    if args.input_shape:
        import torch

        example_inputs = tuple(torch.randn(shape) for shape in args.input_shape)
    if example_inputs is None:
        raise UsageError(
            f"MODEL {args.model!r} returned no example inputs: pass --input-shape, e.g. "
            "--input-shape 1,3,224,224"
        )
    calibration, max_batches = _calibration(args, example_inputs, here)
    result = quantize(
        model,
        example_inputs,
        quantizer,
        backend=args.backend,
        calibration=calibration,
        progress=not args.no_progress,
        max_batches=max_batches,
        range_estimator=args.range_estimator,
        weight_range_estimator=args.weight_range_estimator,
        smooth_quant=args.smooth_quant,
        bias_correction=args.bias_correction,
        target=args.target_sqnr,
        max_float_units=args.max_float_ops,
    )
    if not is_writer(here):  # every rank holds the same program; rank 0 writes it
        return 0
    if args.command == "explain":
        print(result.coverage.to_text())
        return 0
    import torch

    write_atomically(args.output, lambda path: torch.export.save(result.exported_program, path))
    if args.pte is not None:
        pte = get_backend(args.backend).write_pte
        write_atomically(args.pte, lambda path: pte(result.exported_program, path))
    if args.report is not None:
        report = result.report()
        write_atomically(args.report, lambda path: report.to_html(str(path)))
    if args.explain:
        print(result.coverage.to_text())
    for path in outputs:
        _say(f"wrote {path}")
    _say(load_hint(args.output))
    if result.fallback is not None:
        _say(f"accuracy fallback: {result.fallback.summary()}")
    if result.merge is not None:
        _say(
            f"merged the observers of {result.merge.world_size} ranks "
            f"(batches per rank: {', '.join(map(str, result.merge.batches))})"
        )
    _say(result.coverage.summary())
    return 0


def _check_arguments(args: argparse.Namespace, writer: bool = True) -> list[Path]:
    """Usage errors and missing tools, before any model is loaded; returns the output paths
    (checked writable by the process that will write them)."""
    backend = get_backend(args.backend)
    if args.per_tensor and not backend.supports_per_tensor:
        raise UsageError(
            f"--per-tensor: the {backend.name} backend only supports per-channel weights"
        )
    if args.max_float_ops is not None and args.target_sqnr is None:
        raise UsageError(
            "--max-float-ops caps the ops --target-sqnr keeps float: add --target-sqnr"
        )
    if args.smooth_quant is not None and not 0.0 <= args.smooth_quant <= 1.0:
        raise UsageError(f"--smooth-quant: ALPHA must be in [0, 1], got {args.smooth_quant}")
    if args.command != "quantize":
        return []
    if args.pte is not None:
        if backend.write_pte is None:
            lowering = [b.name for b in installed_backends().values() if b.write_pte is not None]
            raise UsageError(
                f"--pte: lowering to ExecuTorch needs --backend {' or '.join(lowering)}"
            )
        _require_executorch()
    outputs = [("--output", args.output), ("--pte", args.pte), ("--report", args.report)]
    for flag, path in outputs:
        if path is not None and writer:
            _check_writable(flag, path)
    return [path for _, path in outputs if path is not None]


def _check_writable(flag: str, path: Path) -> None:
    """Open the file for appending (and remove it again if it is new): the only real test."""
    existed = path.exists()
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory, expected a file path")
    try:
        with open(path, "ab"):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot write there ({error.strerror})") from None
    if not existed:
        path.unlink()


def _preset(args: argparse.Namespace) -> Any:
    return preset_quantizer(args.backend, per_tensor=args.per_tensor, dynamic=args.dynamic)


def load_hint(path: Path) -> str:
    """How to load the saved program: a plain torch.export.load cannot resolve its ops."""
    return (
        f"load {path} with pt2e_quant.load({str(path)!r}); a plain torch.export.load needs "
        "'import pt2e_quant' first (it defines the quantized_decomposed ops the program calls)"
    )


def _calibration(
    args: argparse.Namespace, example_inputs: tuple[Any, ...], here: World | None = None
) -> tuple[list[tuple[Any, ...]], int | None]:
    """The calibration batches (this rank's share under torchrun) and the ``max_batches``
    limit for :func:`quantize`."""
    if args.calibration_data is not None:
        try:
            batches = load_batches(args.calibration_data, example_inputs)
        except (OSError, ValueError, RuntimeError) as error:
            raise UsageError(f"--calibration-data {_one_line(error)}") from None
        if here is None:
            return batches, args.calibration_batches
        return shard(batches[: args.calibration_batches], here), None
    count = args.calibration_batches or DEFAULT_CALIBRATION_BATCHES
    if not args.dynamic and is_writer(here):  # dynamic ranges are computed at run time
        _say(
            f"warning: no --calibration-data: calibrating on {count} batches of random data; "
            "activation ranges will not match real inputs"
        )
    return shard(random_batches(example_inputs, count), here), None


def load_model(spec: str) -> tuple[Any, tuple[Any, ...] | None]:
    """Resolve MODEL to ``(module, example_inputs or None)``.

    ``package.module:callable`` is imported (the working directory is importable, as with
    ``python -m``); ``path/to/file.py[:callable]`` is loaded from the file (its directory is
    importable, so it can import its neighbours), with ``get_model`` when no callable is
    named. The attribute may also be an ``nn.Module`` instance. Errors naming MODEL are
    usage errors; an exception raised by the user's own code is a failure.
    """
    from torch import nn

    target, sep, name = spec.rpartition(":")
    if not sep:
        target, name = spec, DEFAULT_CALLABLE
    if target.endswith(".py") or os.sep in target:
        module = _module_from_file(spec, Path(target))
    elif sep and target and name:
        module = _module_from_import(spec, target)
    else:
        raise UsageError(f"MODEL {spec!r}: expected package.module:callable or path/to/file.py")
    if not hasattr(module, name):
        raise UsageError(f"MODEL {spec!r}: {target} has no attribute {name!r}")
    value = getattr(module, name)
    if not isinstance(value, nn.Module):
        if not callable(value):
            raise UsageError(f"MODEL {spec!r}: {name} is a {type(value).__name__}, not callable")
        value = value()
    if isinstance(value, nn.Module):
        return value, None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], nn.Module):
        inputs = value[1]
        return value[0], inputs if isinstance(inputs, tuple) else (inputs,)
    raise UsageError(
        f"MODEL {spec!r}: {name}() returned {type(value).__name__}; expected an nn.Module "
        "or a (module, example_inputs) tuple"
    )


def _module_from_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"MODEL {spec!r}: no such file {str(path)!r}")
    sys.path.insert(0, str(path.resolve().parent))
    loader_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
    loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _module_from_import(spec: str, name: str) -> Any:
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        # Only a missing MODEL module is a usage error; a missing dependency of it is not.
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise UsageError(f"MODEL {spec!r}: no module named {error.name!r}") from None
        raise


def _require_executorch() -> None:
    """A .pte is an ExecuTorch program, whichever backend lowers it: fail before the slow
    work when ExecuTorch does not import."""
    try:
        importlib.import_module("executorch.exir")
    except ImportError:
        raise RuntimeError(INSTALL_EXECUTORCH) from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)
