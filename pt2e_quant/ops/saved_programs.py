"""Loading a saved quantized program: its operators must exist before torch reads it.

A converted model calls ``torch.ops.quantized_decomposed.*`` (see :mod:`.qdq_ops`), which
torch only defines as a side effect of importing a private module
(:func:`~pt2e_quant.ops.compat.ensure_quantized_decomposed_ops`). ``torch.export.save``
records those calls by name; ``torch.export.load`` in a process that has not defined them
fails with ``SerializeError: We failed to resolve
torch.ops.quantized_decomposed.dequantize_per_channel.default to an operator`` (torch logs
it, then raises ``RuntimeError: We ran into an error when deserializing the saved file``).
:func:`load` defines them first, so the program loads in a fresh process, one that only
deploys the model, just as in the process that quantized it.
"""

from __future__ import annotations

import os
from typing import IO, Any

import torch
from torch.export import ExportedProgram

from pt2e_quant.ops.compat import ensure_quantized_decomposed_ops

__all__ = ["load"]


def load(f: str | os.PathLike[str] | IO[bytes], **kwargs: Any) -> ExportedProgram:
    """``torch.export.load(f, **kwargs)`` with the ``quantized_decomposed`` ops defined.

    Use it for any program ``quantize()`` / ``convert_pt2e`` produced and
    ``torch.export.save`` wrote (``pt2e-quant quantize --output``)::

        program = pt2e_quant.load("model.pt2")
        program.module()(x)

    Importing :mod:`pt2e_quant` defines the ops as well, so ``import pt2e_quant`` before a
    plain ``torch.export.load`` also works; this function says why it is needed.
    ``kwargs`` (``extra_files``, ``expected_opset_version``) go to ``torch.export.load``.
    """
    ensure_quantized_decomposed_ops()
    return torch.export.load(f, **kwargs)
