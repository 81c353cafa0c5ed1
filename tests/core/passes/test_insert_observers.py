"""insert_observers: where observers go when a tensor is written in place through an alias.

After convert an observer is a quantize/dequantize copy. A copy taken before an in-place write
(through a view, or an op that returns its input) and read after it would miss the write, so
such edges keep reading the original tensor and stay float, with a warning naming them.

Also pinned here: which readers an output observer feeds (not export's guard check), input
tensors passed by keyword, and output specs on ops that return a tuple.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn
from torch.fx import GraphModule, Node

from pt2e_quant import QuantizationAnnotation, convert_pt2e, prepare_pt2e
from pt2e_quant.ops import qdq_ops
from pt2e_quant.passes.insert_observers import OBSERVER_PREFIX, AliasedWriteWarning
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.contract.quantizer_fixtures import UINT8_MINMAX, FunctionQuantizer
from tests.graph_check import count_ops
from tests.models import ZOO, SingleLinear
from tests.peer_annotation import library


class WriteThroughView(nn.Module):
    """``a = x * 2``; ``a.view(-1) += x`` writes into ``a``; the mul after must see it::

    a ─ view ─ add_(x) ──────────── sub
    └───────────────── mul(0.5) ──┘
    """

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = a.view(-1)
        b += x
        return b - a * 0.5


class WriteThroughEvalDropout(nn.Module):
    """Eval-mode dropout returns its input, so ``hardtanh_`` on it clamps ``a`` as well."""

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = nn.functional.dropout(a, 0.5, training=False)
        nn.functional.hardtanh_(b)
        return b * a


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config())


@pytest.mark.parametrize("model_cls", [WriteThroughView, WriteThroughEvalDropout])
def test_reads_after_an_aliased_write_see_it_after_convert(model_cls) -> None:
    """(torchao quantizes these edges and its converted model reads the stale value: off by
    up to 1.5 on WriteThroughView's [-4.5, 4.5] outputs.)"""
    x = torch.linspace(-3, 3, 8)
    model = model_cls().eval()
    exported = torch.export.export(model, (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare_pt2e(exported, _xnnpack())
    assert torch.equal(prepared(x), model(x))
    converted = convert_pt2e(prepared)
    assert (converted(x) - model(x)).abs().max() < 0.1
    messages = [str(w.message) for w in caught if issubclass(w.category, AliasedWriteWarning)]
    if model_cls is WriteThroughView:
        (message,) = messages
        assert "'mul'" in message and "written by 'add_'" in message


def test_the_write_itself_is_not_quantized_away() -> None:
    """The view and the in-place add keep operating on the real tensor: no q/dq between."""
    x = torch.linspace(-3, 3, 8)
    exported = torch.export.export(WriteThroughView().eval(), (x,)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AliasedWriteWarning)
        converted = convert_pt2e(prepare_pt2e(exported, _xnnpack()))
    nodes = {n.name: n for n in converted.graph.nodes}
    assert nodes["view"].args[0] is nodes["mul"]
    assert nodes["add_"].args[0] is nodes["view"]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_have_no_aliased_writes(name: str) -> None:
    """Functional rewriting leaves no in-place write in the zoo, so nothing stays float."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    exported = torch.export.export(model, model.example_inputs()).module()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AliasedWriteWarning)
        prepare_pt2e(exported, _xnnpack())


def _annotate(node: Node, inputs: tuple[Node, ...] = (), output: bool = False) -> None:
    node.meta["quantization_annotation"] = QuantizationAnnotation(
        input_qspec_map={arg: UINT8_MINMAX for arg in inputs},
        output_qspec=UINT8_MINMAX if output else None,
        _annotated=True,
    )


def _prepare_annotating(model: nn.Module, inputs: tuple, annotate) -> GraphModule:
    """Export ``model`` and prepare it; ``annotate(nodes_by_name)`` sets the annotations."""
    exported = torch.export.export(model.eval(), inputs).module()
    quantizer = FunctionQuantizer(lambda gm: annotate({n.name: n for n in gm.graph.nodes}))
    return prepare_pt2e(exported, quantizer)


def _observer_readers(prepared: GraphModule) -> set[str]:
    """Names of the nodes some observer reads."""
    return {
        n.args[0].name
        for n in prepared.graph.nodes
        if n.op == "call_module" and n.target.startswith(OBSERVER_PREFIX)
    }


class ReadTheWrite(nn.Module):
    """``b += x`` stays in place (``a`` is read after it); the sigmoid reads the write's own
    result, and nothing writes after it."""

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = a.view(-1)
        b += x
        return torch.sigmoid(b), a * 0.5


def test_a_reader_of_the_write_itself_is_quantized() -> None:
    """Only writes after the producer make a copy stale: a copy of the in-place op's own
    result already holds the write, so the sigmoid's input is quantized, without a warning."""
    x = torch.linspace(-3, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AliasedWriteWarning)
        prepared = _prepare_annotating(
            ReadTheWrite(), (x,), lambda n: _annotate(n["sigmoid"], (n["add_"],))
        )
    nodes = {n.name: n for n in prepared.graph.nodes}
    assert nodes["sigmoid"].args[0].op == "call_module"


class AddToInputThroughView(nn.Module):
    """The mul reads the placeholder itself after a write into it through a view."""

    def forward(self, x: Tensor) -> Tensor:
        x.view(-1).add_(1.0)
        return x * 2


def test_an_input_read_after_a_write_through_a_view_stays_float_with_a_warning() -> None:
    """The mul after the write has to read the written value, which a copy taken at the
    placeholder would not hold; the edge stays float, and the warning says so (a model input
    is no exception: the user otherwise cannot tell why that op was not quantized)."""
    x = torch.randn(2, 2)
    with pytest.warns(AliasedWriteWarning, match=r"'x' \(placeholder x\) -> 'mul'"):
        prepared = _prepare_annotating(
            AddToInputThroughView(), (x,), lambda n: _annotate(n["mul"], (n["x"],))
        )
    nodes = {n.name: n for n in prepared.graph.nodes}
    assert nodes["mul"].args[0] is nodes["x"]
    assert torch.equal(prepared(x.clone()), AddToInputThroughView()(x.clone()))


class AddIntoInput(nn.Module):
    """``x.add_(y * 2)``, then a view of ``x`` taken before the write is read after it."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        rows = x.view(-1)
        x.add_(y * 2.0)
        return rows * 3.0


def test_an_input_an_in_place_op_writes_is_quantized_and_written_back() -> None:
    """The in-place op reads its input quantized and writes into that copy; a ``copy_`` right
    after it puts the result back into the input, so the caller's tensor and the view read
    later both see the write."""
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AliasedWriteWarning)
        prepared = _prepare_annotating(
            AddIntoInput(), (x, y), lambda n: _annotate(n["add_"], (n["x"],))
        )
    nodes = {n.name: n for n in prepared.graph.nodes}
    assert nodes["add_"].args[0].op == "call_module"  # reads the observed input
    write_back = nodes["add_"].next
    assert write_back.target is torch.ops.aten.copy_.default
    assert write_back.args == (nodes["x"], nodes["add_"])
    calibration_x = x.clone()
    prepared(calibration_x, y)  # the prepared model writes the caller's tensor as the model does
    assert torch.equal(calibration_x, x + y * 2.0)
    converted = convert_pt2e(prepared)
    ours_x, eager_x = x.clone(), x.clone()
    out = converted(ours_x, y)
    expected = AddIntoInput()(eager_x, y)
    torch.testing.assert_close(ours_x, eager_x, rtol=0, atol=0.05)  # written, from the copy
    torch.testing.assert_close(out, ours_x.view(-1) * 3.0, rtol=0, atol=0)
    torch.testing.assert_close(out, expected, rtol=0, atol=0.15)


class OnlyAliasedReaders(nn.Module):
    """``a``'s readers: a view written into, and a sum after that write."""

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = a.view(-1)
        b += x.view(-1)
        return a.sum()


def test_an_output_every_reader_must_read_raw_gets_no_observer() -> None:
    """If no reader may take the quantized copy, an output observer would watch a tensor
    nobody reads quantized; convert would then emit a dead q/dq pair."""
    x = torch.randn(2, 4)
    with pytest.warns(AliasedWriteWarning, match=r"-> 'sum_1' \(written by 'add_'\)"):
        prepared = _prepare_annotating(
            OnlyAliasedReaders(), (x,), lambda n: _annotate(n["mul"], output=True)
        )
    assert "mul" not in _observer_readers(prepared)
    assert not [n for n in prepared.graph.nodes if n.name.startswith(OBSERVER_PREFIX)]


class MaxOverRows(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        values, _ = torch.max(x, dim=1)
        return values * 2


@pytest.mark.parametrize("name", ["pt2e_quant", pytest.param("torchao", marks=pytest.mark.torchao)])
def test_an_output_spec_on_a_tuple_valued_op_is_skipped_like_torchao(name: str) -> None:
    """``max.dim`` returns (values, indices): there is no one tensor to observe. Both
    libraries skip the output spec (annotate the ``getitem`` to quantize the values) and still
    quantize the op's input."""
    if name == "torchao":
        pytest.importorskip("torchao")
    lib = library(name)
    spec = lib.api.QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=lib.observers.MinMaxObserver,
    )

    def annotate(nodes):
        nodes["max_1"].meta["quantization_annotation"] = lib.api.QuantizationAnnotation(
            input_qspec_map={nodes["x"]: spec}, output_qspec=spec, _annotated=True
        )

    class Annotate(lib.api.Quantizer):
        def annotate(self, gm):
            annotate({n.name: n for n in gm.graph.nodes})
            return gm

        def validate(self, gm):
            return None

    x = torch.randn(2, 3)
    exported = torch.export.export(MaxOverRows().eval(), (x,)).module()
    prepared = lib.prepare_pt2e(exported, Annotate())
    assert _observer_readers(prepared) == {"x"}
    prepared(x)
    converted = lib.convert_pt2e(prepared)
    assert count_ops(converted)[qdq_ops.QUANTIZE_PER_TENSOR] == 1


def test_the_guard_check_keeps_reading_the_raw_input() -> None:
    """export's ``_guards_fn`` checks the user's inputs; with the input placeholder's output
    annotated, every real reader takes the observed value, but the guard must not."""
    x = torch.randn(2, 4)
    prepared = _prepare_annotating(SingleLinear(), (x,), lambda n: _annotate(n["x"], output=True))
    nodes = {n.name: n for n in prepared.graph.nodes}
    assert nodes["_guards_fn"].args == (nodes["x"],)
    assert nodes["linear"].args[0].op == "call_module"


class AddTwo(nn.Module):
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


def test_an_annotated_input_passed_by_keyword_is_observed() -> None:
    """A transform may pass a tensor by keyword (``add(x, other=y)``); the annotation keys
    on the node, not on the position, so the keyword input is observed too."""
    inputs = (torch.randn(2, 3), torch.randn(2, 3))

    def annotate(nodes):
        add = nodes["add"]
        x, y = add.args
        add.args, add.kwargs = (x,), {"other": y}
        _annotate(add, (x, y))

    prepared = _prepare_annotating(AddTwo(), inputs, annotate)
    add = next(n for n in prepared.graph.nodes if n.name == "add")
    assert add.args[0].op == "call_module" and add.kwargs["other"].op == "call_module"
    assert _observer_readers(prepared) == {"x", "y"}


def test_annotating_the_getitem_quantizes_one_element_of_a_tuple_output() -> None:
    """What the README tells quantizer writers to do instead: the ``getitem`` is a tensor."""
    x = torch.randn(2, 3)

    def annotate(nodes):
        getitem = nodes["getitem"]
        assert getitem.args == (nodes["max_1"], 0)
        _annotate(getitem, output=True)

    prepared = _prepare_annotating(MaxOverRows(), (x,), annotate)
    assert _observer_readers(prepared) == {"getitem"}
    prepared(x)
    converted = convert_pt2e(prepared)
    assert count_ops(converted)[qdq_ops.QUANTIZE_PER_TENSOR] == 1
    assert (converted(x) - MaxOverRows()(x)).abs().max() < 0.02
