"""Make the peers' QAT pipeline affordable in tests: cache their pattern exports.

torchao's QAT prepare / convert / move-to-eval, ExecuTorch's conv-bn annotators and its Core ML
quantizer's annotators re-export the same search patterns (~120; Core ML's ~400) with
``torch.export`` on every call, 10-90 s per model. A pattern's graph depends only on its code,
the values it closes over and the shapes of its example inputs, so the first export is kept
and deep-copied for later callers (they mutate it). Test speed only: the peers compute exactly
what they would uncached.
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
    "executorch.backends.apple.coreml.quantizer._coreml_quantizer_utils",
)


def _pattern_function(pattern: Any) -> Any:
    """The function whose code and closure determine the pattern's graph: torchao's
    ``WrapperModule.fn``, a plain function, or the ``forward`` of a stateless module class
    defined per call (CoreML's ``Pattern``, which closes over the conv / activation)."""
    fn = getattr(pattern, "fn", None)
    if fn is not None:
        return fn
    if isinstance(pattern, torch.nn.Module):
        # only when forward is all there is: no state, no other class attribute it might read
        own = {name for name in vars(type(pattern)) if not name.startswith("__")}
        stateless = not pattern._modules and not pattern._parameters and not pattern._buffers
        return type(pattern).forward if stateless and own == {"forward"} else None
    return pattern


def memoized_pattern_export(export_pattern: Callable[..., Any]) -> Callable[..., Any]:
    cache: dict = {}

    def spec(value: Any) -> Any:
        return (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else value

    def wrapper(pattern, example_inputs, is_cuda=False, **kwargs):
        fn = _pattern_function(pattern)
        try:
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
def cached_peer_pattern_exports(modules: tuple[str, ...] = _USERS) -> Iterator[None]:
    """Patch ``modules`` (by default every peer module that exports patterns) with one
    shared cache. A vendor's own exporter (CoreML's annotator utils export ~400 patterns per
    ``annotate``) is passed by the tests that use that vendor."""
    utils = pytest.importorskip("torchao.quantization.pt2e.utils")
    cached = memoized_pattern_export(utils._get_aten_graph_module_for_pattern)
    with pytest.MonkeyPatch.context() as patch:
        for name in modules:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            patch.setattr(module, "_get_aten_graph_module_for_pattern", cached)
        yield
