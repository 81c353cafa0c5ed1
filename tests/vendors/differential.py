"""One foreign quantizer, two pipelines: torchao's prepare/convert against ours.

A vendor quantizer (ExecuTorch's, NNCF's, torchao's own) is written against torchao's classes;
pt2e_quant promises that it runs through our pipeline with the same result. :func:`compare`
builds the model once from a seed, exports it once, and hands a deep copy and a fresh
quantizer to each pipeline; both calibrate (or train) on the same batches, then convert. The
result holds both converted models, their q/dq op and module counts and outputs on a held-out
batch, so a test asserts what it means: the same counts and ``torch.equal`` outputs, or a
difference it explains.
"""

from __future__ import annotations

import collections
import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

import pt2e_quant
from tests.models import ZOO

#: the zoo models every configuration runs on: conv-bn-relu + residual add + pooling + linear
#: (tiny_resnet), depthwise inverted residuals (tiny_mobilenet_v2), a transformer encoder block
CNN_AND_TRANSFORMER = ("tiny_resnet", "tiny_mobilenet_v2", "transformer_encoder_block")

_QDQ_NAMESPACES = ("quantized_decomposed", "torchao")


def _feeds_only_export_guards(node: torch.fx.Node) -> bool:
    """torchao lets the export guard (``_guards_fn``) read a quantized input's dequantize;
    ours keeps the guard on the float input it checks. That dequantize computes nothing the
    model returns, so it is not counted."""
    return bool(node.users) and all(
        user.op == "call_module" and str(user.target) == "_guards_fn" for user in node.users
    )


def qdq_counts(gm: GraphModule) -> collections.Counter:
    """Quantize / dequantize / choose-qparams calls by op name (ours and torchao's affine),
    except a dequantize read only by the export guard."""
    counts: collections.Counter = collections.Counter()
    for module in gm.modules():
        if not isinstance(module, GraphModule):
            continue
        for node in module.graph.nodes:
            name = str(node.target)
            if node.op != "call_function" or name.split(".")[0] not in _QDQ_NAMESPACES:
                continue
            if not _feeds_only_export_guards(node):
                counts[name] += 1
    return counts


def module_counts(gm: GraphModule) -> collections.Counter:
    """``call_module`` calls by the called module's class, as ``"call_module <class name>"``.

    Some quantizers' observers convert into modules rather than q/dq ops (NNCF's weight
    decompressors, for one); the export guard ``_guards_fn`` is not counted.
    """
    counts: collections.Counter = collections.Counter()
    for module in gm.modules():
        if not isinstance(module, GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op == "call_module" and str(node.target) != "_guards_fn":
                called = module.get_submodule(str(node.target))
                counts[f"call_module {type(called).__name__}"] += 1
    return counts


@dataclass
class Outcome:
    """What one pipeline made of the model."""

    converted: GraphModule
    counts: collections.Counter
    output: Any


@dataclass
class Differential:
    """torchao's and our outcome for one (model, quantizer) pair."""

    theirs: Outcome
    ours: Outcome
    example: tuple

    def assert_same(self) -> None:
        """The same q/dq op and module counts and bit-identical outputs."""
        assert self.ours.counts == self.theirs.counts, (
            f"q/dq op or module counts differ\nours:   {dict(self.ours.counts)}\n"
            f"theirs: {dict(self.theirs.counts)}"
        )
        assert self.ours.counts, "neither pipeline inserted a single quantize op"
        assert_same_outputs(self.ours.output, self.theirs.output)


def assert_same_outputs(ours: Any, theirs: Any) -> None:
    flat_ours, _ = torch.utils._pytree.tree_flatten(ours)
    flat_theirs, _ = torch.utils._pytree.tree_flatten(theirs)
    assert len(flat_ours) == len(flat_theirs)
    for a, b in zip(flat_ours, flat_theirs, strict=True):
        assert torch.equal(a, b), f"outputs differ by up to {(a - b).abs().max().item()}"


def _torchao_pipeline():
    pipeline = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    return pipeline.prepare_pt2e, pipeline.prepare_qat_pt2e, pipeline.convert_pt2e


def _ours():
    return pt2e_quant.prepare_pt2e, pt2e_quant.prepare_qat_pt2e, pt2e_quant.convert_pt2e


def _batches(example: tuple, count: int) -> list[tuple]:
    generator = torch.Generator().manual_seed(1)

    def like(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            values = torch.randn(t.shape, generator=generator, dtype=t.dtype)
            return torch.empty_like(t).copy_(values)  # in the example's memory format
        return t

    return [example] + [tuple(like(t) for t in example) for _ in range(count - 1)]


def _run(
    pipeline: tuple[Callable, Callable, Callable],
    exported: GraphModule,
    quantizer: Any,
    batches: list[tuple],
    held_out: tuple,
    qat: bool,
    convert_kwargs: dict[str, Any],
) -> Outcome:
    prepare, prepare_qat, convert = pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export and observer chatter is not compared here
        prepared = (prepare_qat if qat else prepare)(copy.deepcopy(exported), quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        converted = convert(prepared, **convert_kwargs)
        with torch.no_grad():
            output = converted(*held_out)
    return Outcome(converted, qdq_counts(converted) + module_counts(converted), output)


def _to_channels_last(t: Any) -> Any:
    if isinstance(t, torch.Tensor) and t.dim() == 4:
        return t.to(memory_format=torch.channels_last)
    return t


def export_model(
    model: nn.Module, example: tuple, *, strict: bool = False, check_guards: bool = True
) -> GraphModule:
    """``torch.export`` as the vendor's own flow does it (Cadence: strict; Arm: no guards)."""
    program = torch.export.export(model, example, strict=strict)
    return program.module(check_guards=check_guards)


def compare(
    make_quantizer: Callable[[], Any],
    model: nn.Module | str,
    *,
    qat: bool = False,
    strict: bool = False,
    check_guards: bool = True,
    batches: int = 3,
    convert_kwargs: dict[str, Any] | None = None,
    make_ours: Callable[[], Any] | None = None,
    channels_last: bool = False,
) -> Differential:
    """Run ``model`` (a zoo name or a module with ``example_inputs()``) through torchao's and
    our prepare / calibrate / convert with a fresh ``make_quantizer()`` each.

    ``make_ours`` builds the quantizer for our pipeline instead, for a composition whose
    pt2e_quant form differs from its torchao form only in the imports (e.g. our
    ``ComposableQuantizer`` and ``EmbeddingQuantizer`` around the same vendor quantizer).

    ``channels_last`` exports the model with channels-last weights and 4-d inputs (Cortex-M
    quantizes a convolution only in that layout); the calibration batches keep the layout.
    """
    torch.manual_seed(0)
    module = ZOO[model]() if isinstance(model, str) else model
    module = module.train() if qat else module.eval()
    example = module.example_inputs()
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
        example = tuple(_to_channels_last(t) for t in example)
    exported = export_model(module, example, strict=strict, check_guards=check_guards)
    data = _batches(example, batches)
    held_out = _batches(example, batches + 1)[-1]
    kwargs = convert_kwargs or {}
    theirs = _run(_torchao_pipeline(), exported, make_quantizer(), data, held_out, qat, kwargs)
    ours_quantizer = (make_ours or make_quantizer)()
    ours = _run(_ours(), exported, ours_quantizer, data, held_out, qat, kwargs)
    return Differential(theirs, ours, held_out)
