"""Sharing rules the seed counts do not reach: which edges of one tensor share an observer.

Implicit sharing joins edges whose specs observe the tensor the same way; a consumer annotated
``allow_implicit_sharing=False`` opts out; and a group's observer is built from its first
concrete spec in graph order. Each rule decides how many q/dq pairs a backend sees and which
qparams they carry, so each is pinned here, against torchao where it can run the same graph.
"""

from __future__ import annotations

import pytest
import torch

from tests.peer_annotation import library

aten = torch.ops.aten


class TwoReaders(torch.nn.Module):
    """``relu(x)`` read by a sigmoid and by an add: two annotated edges of one tensor."""

    def forward(self, x, z):
        y = torch.relu(x)
        return torch.sigmoid(y), y + z


class ThreeReaders(torch.nn.Module):
    """``relu(x)`` read by a sigmoid, a tanh and an add, in that graph order."""

    def forward(self, x, z):
        y = torch.relu(x)
        return torch.sigmoid(y), torch.tanh(y), y + z


class TiedWeight(torch.nn.Module):
    """One 4x4 parameter read by linear (output channels on axis 0) and matmul (on axis 1)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.w), torch.matmul(x, self.w)


def _two_inputs():
    return (torch.randn(2, 3), torch.randn(2, 3))


def _uint8_spec(lib, **overrides):
    fields = dict(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=lib.observers.MinMaxObserver,
    )
    fields.update(overrides)
    return lib.api.QuantizationSpec(**fields)


def _prepare(lib, model, inputs, annotate):
    """Export ``model`` and prepare it with a quantizer whose annotate step is ``annotate``."""

    class Annotate(lib.api.Quantizer):
        def annotate(self, gm):
            annotate(gm)
            return gm

        def validate(self, gm):
            return None

    gm = torch.export.export(model.eval(), inputs).module()
    return lib.prepare_pt2e(gm, Annotate())


def _node(gm, target):
    return next(n for n in gm.graph.nodes if n.target == target)


def _annotate_input(lib, consumer, producer, spec, **kwargs):
    consumer.meta["quantization_annotation"] = lib.api.QuantizationAnnotation(
        input_qspec_map={producer: spec}, _annotated=True, **kwargs
    )


def _input_observer(prepared, consumer, index):
    arg = consumer.args[index]
    assert arg.op == "call_module", f"{consumer.name} input {index} is {arg.format_node()}"
    return getattr(prepared, str(arg.target))


def _library(name):
    if name == "torchao":
        pytest.importorskip("torchao")
    return library(name)


@pytest.mark.parametrize("name", ["pt2e_quant", pytest.param("torchao", marks=pytest.mark.torchao)])
def test_an_opted_out_consumer_keeps_its_own_observer(name):
    """The add opts out of implicit sharing, the sigmoid does not. We give the add's edge its
    own observer, as ``allow_implicit_sharing=False`` says. torchao merges the two when it
    visits the sigmoid's edge (it checks the flag only on the edge being visited), so the add
    is quantized with qparams calibrated on the sigmoid's edge after all."""
    lib = _library(name)

    def annotate(gm):
        relu = _node(gm, aten.relu.default)
        _annotate_input(lib, _node(gm, aten.sigmoid.default), relu, _uint8_spec(lib))
        _annotate_input(
            lib, _node(gm, aten.add.Tensor), relu, _uint8_spec(lib), allow_implicit_sharing=False
        )

    prepared = _prepare(lib, TwoReaders(), _two_inputs(), annotate)
    sigmoid_observer = _input_observer(prepared, _node(prepared, aten.sigmoid.default), 0)
    add_observer = _input_observer(prepared, _node(prepared, aten.add.Tensor), 0)
    assert (sigmoid_observer is add_observer) is (name == "torchao")


@pytest.mark.parametrize("name", ["pt2e_quant", pytest.param("torchao", marks=pytest.mark.torchao)])
def test_specs_differing_only_in_qscheme_do_not_share(name):
    """An affine and a symmetric view of one tensor need different qparams: two observers."""
    lib = _library(name)
    affine = _uint8_spec(lib, qscheme=torch.per_tensor_affine)
    symmetric = _uint8_spec(lib, qscheme=torch.per_tensor_symmetric)

    def annotate(gm):
        relu = _node(gm, aten.relu.default)
        _annotate_input(lib, _node(gm, aten.sigmoid.default), relu, affine)
        _annotate_input(lib, _node(gm, aten.add.Tensor), relu, symmetric)

    prepared = _prepare(lib, TwoReaders(), _two_inputs(), annotate)
    first = _input_observer(prepared, _node(prepared, aten.sigmoid.default), 0)
    second = _input_observer(prepared, _node(prepared, aten.add.Tensor), 0)
    assert first is not second
    assert (first.qscheme, second.qscheme) == (torch.per_tensor_affine, torch.per_tensor_symmetric)


@pytest.mark.parametrize("name", ["pt2e_quant", pytest.param("torchao", marks=pytest.mark.torchao)])
def test_specs_differing_only_in_channel_axis_do_not_share(name):
    """A weight read per output channel by linear (axis 0) and by matmul (axis 1) needs a
    scale per row for one and per column for the other."""
    lib = _library(name)
    per_channel = dict(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        observer_or_fake_quant_ctr=lib.observers.PerChannelMinMaxObserver,
    )

    def annotate(gm):
        for target, axis in ((aten.linear.default, 0), (aten.matmul.default, 1)):
            node = _node(gm, target)
            _annotate_input(lib, node, node.args[1], _uint8_spec(lib, ch_axis=axis, **per_channel))

    prepared = _prepare(lib, TiedWeight(), (torch.randn(2, 4),), annotate)
    rows = _input_observer(prepared, _node(prepared, aten.linear.default), 1)
    columns = _input_observer(prepared, _node(prepared, aten.matmul.default), 1)
    assert rows is not columns
    assert (rows.ch_axis, columns.ch_axis) == (0, 1)


def test_the_first_concrete_spec_in_graph_order_builds_the_shared_observer():
    """The sigmoid's edge shares (forward) with the add's; the tanh's edge observes alike and
    joins by implicit sharing. All three get one observer, built from the tanh's spec: the
    first concrete one in graph order, not the one the first member points at. (torchao
    cannot run this graph: it requires a shared spec to point at an edge it has already
    visited.)"""
    lib = library("pt2e_quant")

    def annotate(gm):
        relu, add = _node(gm, aten.relu.default), _node(gm, aten.add.Tensor)
        moving = _uint8_spec(
            lib, observer_or_fake_quant_ctr=lib.observers.MovingAverageMinMaxObserver
        )
        _annotate_input(
            lib, _node(gm, aten.sigmoid.default), relu, lib.api.SharedQuantizationSpec((relu, add))
        )
        _annotate_input(lib, _node(gm, aten.tanh.default), relu, _uint8_spec(lib))
        _annotate_input(lib, add, relu, moving)

    prepared = _prepare(lib, ThreeReaders(), _two_inputs(), annotate)
    observers = {
        _input_observer(prepared, _node(prepared, target), 0)
        for target in (aten.sigmoid.default, aten.tanh.default, aten.add.Tensor)
    }
    (observer,) = observers
    assert type(observer) is lib.observers.MinMaxObserver
