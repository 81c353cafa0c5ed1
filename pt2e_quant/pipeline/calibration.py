"""Run calibration data through a prepared model, with a progress bar and user-facing errors.

Observers only learn ranges from the batches they see, so calibration is where most
"quantized model is garbage" reports start: an empty iterable, a batch of the wrong shape, a
DataLoader yielding ``(inputs, labels)``. This module turns each into a one-line error naming
the argument and the batch, instead of a guard failure deep inside the exported graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.fx import GraphModule
from tqdm.auto import tqdm

from pt2e_quant.errors import QuantizationError

__all__ = [
    "CalibrationError",
    "as_batch",
    "calibrate",
    "check_max_batches",
    "describe_shapes",
    "load_batches",
    "outputs_of",
    "random_batches",
    "read_batches",
]


class CalibrationError(QuantizationError, ValueError):
    """The calibration data is empty or does not fit the model's example inputs."""


def describe_shapes(batch: tuple[Any, ...]) -> str:
    """``(1, 3, 8, 8), int64 (4,)``: the shapes (and non-float dtypes) of a batch, for messages."""
    parts = []
    for value in batch:
        if isinstance(value, torch.Tensor):
            dtype = "" if value.dtype == torch.float32 else f"{str(value.dtype)[6:]} "
            parts.append(f"{dtype}{tuple(value.shape)}")
        else:
            parts.append(type(value).__name__)
    return ", ".join(parts)


def as_batch(item: Any) -> tuple[Any, ...]:
    """One calibration item as positional inputs: a lone tensor becomes a 1-tuple.

    Lists are accepted as tuples (a DataLoader's default collate yields lists).
    """
    if isinstance(item, tuple):
        return item
    if isinstance(item, list):
        return tuple(item)
    return (item,)


def read_batches(data: Iterable[Any], what: str) -> list[tuple[Any, ...]]:
    """Materialise ``data`` once (it may be a one-shot iterator), each item read by
    :func:`as_batch`, for the algorithms that run the data several times; ``what`` names the
    caller and argument in the error an empty ``data`` raises (``"sensitivity: eval_data"``)."""
    batches = [as_batch(item) for item in data]
    if not batches:
        raise ValueError(f"{what} is empty; pass at least one tuple of model inputs")
    return batches


def outputs_of(model: torch.nn.Module, batches: list[tuple[Any, ...]]) -> list[Any]:
    """The model's output for each batch, without autograd."""
    with torch.no_grad():
        return [model(*batch) for batch in batches]


def _limited(batches: Iterable[Any], max_batches: int | None) -> Iterator[Any]:
    """At most ``max_batches`` items, never fetching one more (a DataLoader would load it)."""
    return iter(batches) if max_batches is None else islice(batches, max_batches)


def _total(batches: Iterable[Any], max_batches: int | None) -> int | None:
    """The bar's total: ``len()`` when the iterable has one (a list, a DataLoader), capped."""
    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return max_batches
    return total if max_batches is None else min(total, max_batches)


def check_max_batches(max_batches: int | None) -> None:
    """Raise ``ValueError`` naming ``max_batches`` unless it is None or a positive int."""
    if max_batches is not None and (not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be a positive int or None, got {max_batches!r}")


def calibrate(
    model: GraphModule,
    batches: Iterable[Any],
    example_inputs: tuple[Any, ...],
    *,
    progress: bool = True,
    max_batches: int | None = None,
) -> int:
    """Feed every batch (at most ``max_batches``) to ``model``; return how many ran.

    ``example_inputs`` is only used to tell the user what shapes were expected when a batch
    fails. Raises :class:`CalibrationError` naming ``calibration`` when no batch was given,
    and naming the batch index when the model rejects one (the original error is chained).
    """
    check_max_batches(max_batches)
    count = 0
    bar = tqdm(
        _limited(batches, max_batches),
        total=_total(batches, max_batches),
        disable=not progress,
        desc="calibrating",
        unit="batch",
    )
    with torch.no_grad():
        for count, item in enumerate(bar, start=1):
            batch = as_batch(item)
            try:
                model(*batch)
            except Exception as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise CalibrationError(
                    f"calibration batch {count - 1} has inputs ({describe_shapes(batch)}) but the "
                    f"model was exported with ({describe_shapes(example_inputs)}): {reason}; "
                    "pass batches shaped like example_inputs (or export with dynamic_shapes)"
                ) from error
    bar.close()
    if count == 0:
        raise CalibrationError(
            "calibration is empty: it yielded no batch; pass an iterable of input tuples, "
            "or None to calibrate on example_inputs"
        )
    return count


def random_like(value: Any) -> Any:
    """A random tensor shaped like ``value``: normal floats, or integers in ``value``'s range.

    Integer inputs are usually indices (token ids, embedding rows), so they stay within
    ``0 .. value.max()`` instead of becoming out-of-range garbage.
    """
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_floating_point():
        return torch.randn_like(value)
    high = int(value.max()) + 1 if value.numel() else 1
    return torch.randint_like(value, 0, max(high, 1))


def random_batches(example_inputs: tuple[Any, ...], count: int) -> list[tuple[Any, ...]]:
    """``count`` random batches shaped (and typed) like ``example_inputs``."""
    return [tuple(random_like(value) for value in example_inputs) for _ in range(count)]


def load_batches(path: str | Path, example_inputs: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Calibration batches from a ``torch.save``'d file.

    The file holds either one tensor with the batch dimension first, split into batches of
    the example input's first dimension (a last, shorter chunk is dropped: a model exported
    with a static batch size would reject it), or a list of batches, each a tensor or a
    tuple of tensors. Raises ``ValueError`` (naming the file) for anything else, or no batch.
    """
    data = torch.load(path, weights_only=True)
    if isinstance(data, torch.Tensor):
        if len(example_inputs) != 1:
            raise ValueError(
                f"{path} holds one tensor but the model takes {len(example_inputs)} inputs; "
                "save a list of input tuples instead"
            )
        first = example_inputs[0]
        size = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else 1
        batches = [(chunk,) for chunk in torch.split(data, size) if chunk.shape[0] == size]
    elif isinstance(data, (list, tuple)):
        batches = [as_batch(item) for item in data]
    else:
        raise ValueError(
            f"{path} holds a {type(data).__name__}; expected a tensor or a list of batches"
        )
    if not batches:
        raise ValueError(f"{path} holds no calibration batch")
    return batches
