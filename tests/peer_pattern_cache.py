"""Make the peers' QAT pipeline affordable in tests: cache their pattern exports.

torchao's QAT prepare / convert / move-to-eval and ExecuTorch's conv-bn annotators re-export
the same ~120 search patterns with ``torch.export`` on every call, 10-25 s per model with a
batch norm. A pattern's graph depends only on its code, the values it closes over and the
shapes of its example inputs, so the first export is kept and deep-copied for later callers
(they mutate it). Test speed only: the peers compute exactly what they would uncached.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

#: modules that bind ``_get_aten_graph_module_for_pattern`` by name at import time
_USERS = (
    "torchao.quantization.pt2e.utils",
    "torchao.quantization.pt2e.qat_utils",
    "executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils",
)


def _pattern_function(pattern: Any) -> Any:
    """The function whose code and closure define the pattern's graph: the ``fn`` torchao's
    WrapperModule wraps, or the ``forward`` of a stateless module class defined per call
    (CoreML's annotators build a fresh ``Pattern`` class closing over the op functions)."""
    if hasattr(pattern, "fn"):
        return pattern.fn
    if isinstance(pattern, torch.nn.Module):
        if list(pattern.children()) or list(pattern.parameters()) or list(pattern.buffers()):
            raise TypeError("a module pattern with state is not keyed by its code")
        return type(pattern).forward
    return pattern


def memoized_pattern_export(export_pattern: Callable[..., Any]) -> Callable[..., Any]:
    cache: dict = {}

    def spec(value: Any) -> Any:
        return (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value

    def wrapper(pattern, example_inputs, is_cuda=False, **kwargs):
        try:
            fn = _pattern_function(pattern)
            cells = tuple(cell.cell_contents for cell in fn.__closure__ or ())
            key = (fn.__code__, cells, tuple(map(spec, example_inputs)), is_cuda)
            key += (tuple(sorted((k, spec(v)) for k, v in kwargs.items())),)
            hash(key)
        except (AttributeError, TypeError, ValueError):
            return export_pattern(pattern, example_inputs, is_cuda, **kwargs)
        if key not in cache:
            cache[key] = export_pattern(pattern, example_inputs, is_cuda, **kwargs)
        return copy.deepcopy(cache[key])

    return wrapper


@contextmanager
def cached_peer_pattern_exports() -> Iterator[None]:
    """Patch every peer module that exports patterns with one shared cache."""
    utils = pytest.importorskip("torchao.quantization.pt2e.utils")
    cached = memoized_pattern_export(utils._get_aten_graph_module_for_pattern)
    with pytest.MonkeyPatch.context() as patch:
        for name in _USERS:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            patch.setattr(module, "_get_aten_graph_module_for_pattern", cached)
        yield
