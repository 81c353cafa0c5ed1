"""One call from a float ``nn.Module`` to a quantized, exportable program.

:func:`quantize` is the pipeline every tutorial spells out, as one literal sequence::

    export -> debug handles -> prepare (or prepare_qat + train_fn) -> calibrate -> convert
      -> re-export

with the checks a first-time user needs: arguments are validated before the slow work,
an export failure says what to try next, and the user's model is left exactly as it was
(same ``state_dict``, same ``training`` flags). What it returns also explains itself:
``result.coverage`` lists the ops left in float and why, ``result.report()`` compares the
quantized model with the float one op by op.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.fx import GraphModule

from pt2e_quant.algorithms.accuracy_fallback import FallbackResult
from pt2e_quant.algorithms.recipe import AccuracyOptions, run_accuracy_recipe
from pt2e_quant.algorithms.smooth_quant import SmoothQuantResult
from pt2e_quant.contract.backends import get_backend
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.debug.handles import generate_numeric_debug_handle
from pt2e_quant.distributed.calibration import SyncReport, calibrate_distributed
from pt2e_quant.distributed.collectives import DistributedQuantizationError, World, world
from pt2e_quant.distributed.qat_training import synchronized_qat, without_sync_batch_norm
from pt2e_quant.errors import QuantizationError, warn_user
from pt2e_quant.pipeline.calibration import as_batch, check_max_batches
from pt2e_quant.pipeline.prepare_convert import convert_pt2e, prepare_pt2e, prepare_qat_pt2e

__all__ = [
    "DEFAULT_BACKEND",
    "ExportFailedError",
    "QuantizationResult",
    "preset_quantizer",
    "quantize",
]

TrainFn = Callable[[GraphModule], Any]

#: the backend :func:`quantize` and the CLI's ``--backend`` use when none is named
DEFAULT_BACKEND = "xnnpack"


class ExportFailedError(QuantizationError, RuntimeError):
    """``torch.export`` rejected the model; the message carries its error and a likely fix."""


@dataclass
class QuantizationResult:
    """What :func:`quantize` produced.

    ``module`` is the converted GraphModule (q/dq ops around float ops), ``exported_program``
    the same model exported again, ready for ``torch.export.save`` or ExecuTorch lowering.
    ``coverage`` and ``report()`` are computed on first use: both walk the whole graph, and
    ``report()`` runs the float and quantized models.
    """

    module: GraphModule
    exported_program: ExportedProgram
    quantizer: Quantizer
    backend: str | None
    example_inputs: tuple[Any, ...]
    float_program: ExportedProgram = field(repr=False)
    #: what the accuracy-aware fallback found (``quantize(target=...)``), else None
    fallback: FallbackResult | None = field(default=None, repr=False)
    #: what SmoothQuant smoothed (``quantize(smooth_quant=alpha)``), else None
    smoothing: SmoothQuantResult | None = field(default=None, repr=False)
    #: how the observers were merged across ranks (under torch.distributed), else None
    merge: SyncReport | None = field(default=None, repr=False)

    @functools.cached_property
    def coverage(self) -> Any:
        """Per compute op: quantized or not, why not, and the backend's delegation/fusion."""
        from pt2e_quant.coverage import explain

        return explain(self.module, self.quantizer, backend=self.backend)

    def report(self) -> Any:
        """The numeric debugger's per-op comparison of float and quantized outputs.

        Matches ops through the debug handles :func:`quantize` put on the float program
        before preparing, so renamed or decomposed ops still line up.
        """
        from pt2e_quant.debug.report import numeric_report

        return numeric_report(self.float_program, self.module, self.example_inputs)


def preset_quantizer(
    backend: str = DEFAULT_BACKEND,
    *,
    per_tensor: bool = False,
    dynamic: bool = False,
    qat: bool = False,
) -> Quantizer:
    """A new quantizer with ``backend``'s recommended config: the one :func:`quantize` uses
    when given none, and the one the CLI builds from ``--backend`` / ``--per-tensor`` /
    ``--dynamic``, so the API and the command line mean the same by each knob.

    ``dynamic``: int8 activations whose scale and zero point are computed from each input
    at run time (``choose_qparams -> quantize -> dequantize`` before the linear / conv; no
    activation ranges to calibrate, outputs stay float); weights are int8 as usual.
    """
    return get_backend(backend).preset(per_tensor=per_tensor, dynamic=dynamic, qat=qat)


def quantize(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    quantizer: Quantizer | None = None,
    *,
    backend: str = DEFAULT_BACKEND,
    dynamic: bool = False,
    calibration: Iterable[Any] | None = None,
    qat: bool = False,
    train_fn: TrainFn | None = None,
    progress: bool = True,
    strict: bool = False,
    dynamic_shapes: Any = None,
    max_batches: int | None = None,
    range_estimator: str | None = None,
    weight_range_estimator: str | None = None,
    smooth_quant: float | None = None,
    bias_correction: bool = False,
    target: float | None = None,
    metric: str | Callable[[GraphModule], float] = "sqnr",
    validation: Iterable[Any] | None = None,
    max_float_units: int | None = None,
) -> QuantizationResult:
    """Export, quantize and re-export ``model``; the caller's model is not modified.

    * ``quantizer``: any :class:`Quantizer`; when None, ``backend`` (an installed backend's
      name: "xnnpack", "x86", ...; :data:`DEFAULT_BACKEND` by default) picks its preset
      (:func:`preset_quantizer`). With an explicit quantizer, the coverage report infers the
      backend from the quantizer's type.
    * ``dynamic=True``: the preset quantizes activations dynamically (see
      :func:`preset_quantizer`), as the CLI's ``--dynamic``; calibration then only runs the
      model once, and ``calibration=None`` is not warned about. It configures the preset, so
      it cannot be combined with an explicit ``quantizer``.
    * ``calibration``: an iterable of batches, each a tuple of positional inputs or a lone
      tensor (a DataLoader of inputs works). None calibrates on ``example_inputs`` once, with
      a warning: ranges from one batch are rarely representative. At most ``max_batches``
      run, under a tqdm bar (``progress=False`` hides it).
    * ``qat=True``: there is no training loop in a one-call API, so the caller brings one:
      ``train_fn(prepared_model)`` trains the fake-quantized model in place (its return value
      is ignored); it replaces calibration, so ``calibration`` must be None. The model is
      exported in training mode from a deep copy, so training never touches the caller's
      parameters.
    * ``strict`` / ``dynamic_shapes``: passed to ``torch.export.export`` (both exports);
      a preset whose backend needs strict export (``Backend.export_strict``) gets it.

    Accuracy algorithms (post-training only; ``docs/accuracy.md``), with any quantizer:

    * ``range_estimator`` / ``weight_range_estimator``: "minmax", "percentile", "mse" or
      "kl" (activations only) replace the quantizer's observers for activation / weight
      ranges (``docs/range-estimators.md``); None keeps the quantizer's own.
    * ``smooth_quant=alpha``: SmoothQuant migrates linear / matmul inputs' per-channel
      outliers into the weights before annotation (``docs/smooth-quant.md``); the inserted
      scaling multiplies stay float and ``result.coverage`` says why.
    * ``bias_correction=True``: each quantized conv / linear's mean output shift, measured on
      the calibration batches, is folded into its bias (``docs/bias-correction.md``).
    * ``target``: keep the fewest ops float that bring the model to ``target``
      (:mod:`pt2e_quant.algorithms.accuracy_fallback`); ``metric`` "sqnr" scores the output
      SQNR in dB against the float model, a callable ``metric(model) -> float`` anything
      else (higher is better), on ``validation`` batches (default: the calibration batches);
      ``max_float_units`` caps the ops kept float. ``result.fallback`` tells what was kept
      and why; ``result.coverage`` reports those ops as "kept float to meet the accuracy
      target".

    Under torch.distributed (a process group of several ranks is initialised, e.g. by
    ``torchrun``), each rank passes its own shard as ``calibration``; the observers are
    merged across ranks after calibrating (``pt2e_quant.distributed``, ``docs/distributed.md``),
    so every rank returns the same program; ``result.merge`` reports the merge. Only rank 0
    shows progress. With ``qat=True`` (``train_fn`` may wrap the prepared model in
    DistributedDataParallel), the fake-quants observe the global batch at every step, batch
    norms follow the model's choice (``nn.SyncBatchNorm``: global statistics; ``BatchNorm``:
    per rank, rank 0's running statistics kept, as DDP does) and every rank converts the
    same program (``docs/distributed-qat.md``). SmoothQuant, bias correction and the
    fallback read every batch in one process and are refused there.
    """
    _check_arguments(model, example_inputs, quantizer, backend, calibration, qat, train_fn)
    _check_dynamic(dynamic, quantizer)
    check_max_batches(max_batches)
    accuracy = AccuracyOptions(
        range_estimator=range_estimator,
        weight_range_estimator=weight_range_estimator,
        smooth_quant=smooth_quant,
        bias_correction=bias_correction,
        target=target,
        metric=metric,
        validation=validation,
        max_float_units=max_float_units,
    )
    accuracy.check()
    here = world()
    if here is not None:
        _check_distributed(accuracy, here)
        progress = progress and here.rank == 0
    if qat and accuracy.active:
        raise ValueError(
            "the accuracy algorithms (bias_correction, target, ...) are post-training: they "
            "calibrate and compare; with qat=True, train the fake-quantized model instead"
        )
    if quantizer is None:
        quantizer = preset_quantizer(backend, dynamic=dynamic, qat=qat)
        coverage_backend: str | None = backend
    else:
        coverage_backend = None
    strict, check_guards = _export_options(coverage_backend, strict)
    sync_batch_norm = False
    if qat and here is not None:  # SyncBatchNorm cannot export; its sync returns on the graph
        model, sync_batch_norm = without_sync_batch_norm(model)
    float_program = _export(model, example_inputs, strict, dynamic_shapes, training=qat)
    generate_numeric_debug_handle(float_program)  # before module(): prepare keeps the handles
    float_module = float_program.module(check_guards=check_guards)
    fallback = smoothing = merge = None
    if qat:
        prepared = prepare_qat_pt2e(float_module, quantizer)
        if here is None:
            train_fn(prepared)  # type: ignore[misc]  # checked by _check_arguments
        else:
            with synchronized_qat(prepared, sync_batch_norm) as merges:
                train_fn(prepared)  # type: ignore[misc]
            merge = merges[-1]
        converted = convert_pt2e(prepared)
    elif accuracy.active:
        # the algorithms read the data several times: a one-shot iterator is read once here
        given = _calibration_batches(calibration, example_inputs, warn=not dynamic)
        batches = [as_batch(b) for b in itertools.islice(given, max_batches)]
        if not batches and here is None:  # under torchrun the merge names the empty rank
            raise ValueError("calibration is empty; pass at least one batch, or None")
        outcome = run_accuracy_recipe(float_module, quantizer, batches, accuracy, progress=progress)
        converted, fallback, smoothing = outcome.module, outcome.fallback, outcome.smoothing
        merge = outcome.merge
    else:
        prepared = prepare_pt2e(float_module, quantizer)
        batches = _calibration_batches(calibration, example_inputs, warn=not dynamic)
        merge = calibrate_distributed(
            prepared, batches, example_inputs, progress=progress, max_batches=max_batches
        )
        converted = convert_pt2e(prepared)
    exported = torch.export.export(
        converted, example_inputs, strict=False, dynamic_shapes=dynamic_shapes
    )
    return QuantizationResult(
        converted,
        exported,
        quantizer,
        coverage_backend,
        example_inputs,
        float_program,
        fallback,
        smoothing,
        merge if merge is not None and merge.distributed else None,
    )


def _check_distributed(accuracy: AccuracyOptions, here: World) -> None:
    """The algorithms that need every calibration batch in one process, refused under
    torch.distributed before any work (range estimators merge like other observers)."""
    local_only = [
        name
        for name, asked in (
            ("smooth_quant", accuracy.smooth_quant is not None),
            ("bias_correction", accuracy.bias_correction),
            ("target", accuracy.target is not None),
        )
        if asked
    ]
    if local_only:
        raise DistributedQuantizationError(
            f"quantize() on rank {here.rank} of {here.size}: {', '.join(local_only)} measure "
            "the model on every calibration batch in one process and cannot be merged across "
            "ranks yet; run them in a single process (without torchrun), or drop them here "
            "(range_estimator / weight_range_estimator do merge across ranks)"
        )


def _check_arguments(
    model: Any,
    example_inputs: Any,
    quantizer: Any,
    backend: Any,
    calibration: Any,
    qat: bool,
    train_fn: Any,
) -> None:
    """Every mistake that is visible before exporting, as a ValueError naming the argument."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_inputs, tuple):
        raise ValueError(
            f"example_inputs must be a tuple of positional inputs, got "
            f"{type(example_inputs).__name__}; write (x,) for a single input"
        )
    if quantizer is not None and not _is_quantizer(quantizer):
        raise ValueError(
            f"quantizer must be a pt2e_quant Quantizer, a quantizer written for torchao (with "
            f"annotate and validate), or None; got {type(quantizer).__name__}"
        )
    if quantizer is None or backend is not None:
        get_backend(backend)  # a ValueError listing the installed backends
    if isinstance(calibration, torch.Tensor):
        raise ValueError(
            "calibration must be an iterable of batches, got a single Tensor; "
            "pass [tensor] for one batch"
        )
    empty = calibration is not None and hasattr(calibration, "__len__") and len(calibration) == 0
    if empty and world() is None:  # under torchrun the merge names the empty rank on every rank
        raise ValueError("calibration is empty; pass at least one batch, or None")
    if qat and not callable(train_fn):
        raise ValueError("train_fn: qat=True needs train_fn(prepared_model) that trains it")
    if qat and calibration is not None:
        raise ValueError("calibration is not used with qat=True; feed data in train_fn instead")
    if not qat and train_fn is not None:
        raise ValueError("train_fn is only used with qat=True")


def _check_dynamic(dynamic: Any, quantizer: Quantizer | None) -> None:
    if not isinstance(dynamic, bool):
        raise ValueError(f"dynamic must be True or False, got {dynamic!r}")
    if dynamic and quantizer is not None:
        raise ValueError(
            f"dynamic=True configures the backend preset, but an explicit quantizer "
            f"({type(quantizer).__name__}) was passed; configure dynamic quantization on it "
            "(e.g. get_symmetric_quantization_config(is_dynamic=True)) or drop quantizer="
        )


def _is_quantizer(value: Any) -> bool:
    """Ours, or a foreign quantizer (ExecuTorch's vendors derive from torchao's base class,
    not ours): prepare reads its annotations at one boundary (``contract.foreign``)."""
    return isinstance(value, Quantizer) or all(
        callable(getattr(value, method, None)) for method in ("annotate", "validate")
    )


def _export_options(backend: str | None, strict: bool) -> tuple[bool, bool]:
    """``(strict, check_guards)`` for the first export: a preset's backend may need strict
    export or no guard call (``Backend.export_strict`` / ``check_guards``); with an explicit
    quantizer (``backend`` None here) the caller's ``strict`` stands."""
    if backend is None:
        return strict, True
    chosen = get_backend(backend)
    return strict or chosen.export_strict, chosen.check_guards


def _calibration_batches(
    calibration: Iterable[Any] | None, example_inputs: tuple[Any, ...], warn: bool
) -> Iterable[Any]:
    if calibration is not None:
        return calibration
    if not warn:  # dynamic quantization: activation ranges are computed at run time
        return [example_inputs]
    warn_user(
        "calibration is None: calibrating on example_inputs only; pass representative "
        "batches (calibration=...) for accurate activation ranges",
        UserWarning,
    )
    return [example_inputs]


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put every submodule in ``training`` mode for the block, then restore each flag."""
    flags = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def _export(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    strict: bool,
    dynamic_shapes: Any,
    training: bool,
) -> ExportedProgram:
    """Export in eval mode (PTQ) or from a training-mode deep copy (QAT, which mutates it)."""
    if training:
        model = copy.deepcopy(model)
    try:
        with _mode(model, training):
            return torch.export.export(
                model, example_inputs, strict=strict, dynamic_shapes=dynamic_shapes
            )
    except Exception as error:
        raise ExportFailedError(_export_failure_message(error, strict, dynamic_shapes)) from error


def _export_failure_message(error: Exception, strict: bool, dynamic_shapes: Any) -> str:
    """One line: what torch.export said, then the fix most likely to help."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    lowered = text.lower()
    if strict:
        fix = "retry with strict=False (non-strict export runs the Python code as written)"
    elif "data-dependent" in lowered or "datadependent" in lowered:
        fix = (
            "the model branches on tensor values: rewrite the branch with torch.cond, or "
            "pass dynamic_shapes if it branches on input sizes"
        )
    elif "dynamic" in lowered or "constraint" in lowered or "specializ" in lowered:
        fix = "check dynamic_shapes against the shapes the model really accepts"
    elif dynamic_shapes is None:
        fix = "if input sizes vary, pass dynamic_shapes; else run the model eagerly to see why"
    else:
        fix = "check example_inputs and dynamic_shapes match forward()'s signature"
    return (
        f"could not export the model (torch.export.export, strict={strict}): "
        f"{type(error).__name__}: {first}; likely fix: {fix}"
    )
