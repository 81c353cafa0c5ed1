"""restore_inplace_ops: a PTQ-prepared model writes in place again where the export did, safely.

Checked: the prepared graph has ``relu_`` / ``add_`` back where torchao's prepared graph has
them; every value an in-place write would reach that must not be written (read later, a model
input, a module tensor, a view, seen by an observer that may keep it) keeps the functional op;
calibration gives the same outputs and observer statistics with and without the pass (with
and without autograd); convert produces exactly the graph it produces without the pass; QAT
keeps functional ops and trains.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

import pt2e_quant.observer as our_observer
import pt2e_quant.pipeline.prepare_convert as pipeline
from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.graph.aliasing import alias_classes
from pt2e_quant.observer import MinMaxObserver
from pt2e_quant.passes.replace_inplace_ops import inplace_origin, replace_inplace_ops
from pt2e_quant.passes.restore_inplace_ops import restore_inplace_ops
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.contract.quantizer_fixtures import FunctionQuantizer
from tests.models.zoo_vision import BottleneckResNet, ResNetBottleneck

aten = torch.ops.aten
INPLACE = (aten.relu_.default, aten.add_.Tensor)
FUNCTIONAL = (aten.relu.default, aten.add.Tensor)


def _small_resnet() -> BottleneckResNet:
    torch.manual_seed(0)
    return BottleneckResNet(width=4, blocks=(1, 1), size=16, num_classes=5).eval()


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _targets(gm: GraphModule, ops: tuple) -> dict[str, object]:
    return {n.name: n.target for n in gm.graph.nodes if n.target in ops}


def _prepare(exported: GraphModule, restore: bool, monkeypatch, quantizer=None):
    """Prepare (a copy of) ``exported``, with the pass or with it replaced by a no-op."""
    with monkeypatch.context() as patch:
        if not restore:
            patch.setattr(pipeline, "restore_inplace_ops", lambda gm: False)
        return prepare_pt2e(exported, quantizer or _xnnpack())


def _observer_state(gm: GraphModule) -> dict[str, torch.Tensor]:
    return {
        name: tensor
        for name, tensor in gm.state_dict().items()
        if name.startswith("activation_post_process_")
    }


# ------------------------------------------------------------------------ end to end


def test_prepared_model_writes_in_place_where_the_export_did(monkeypatch):
    model = _small_resnet()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    prepared = _prepare(exported, True, monkeypatch)
    assert _targets(prepared, INPLACE) == _targets(exported, INPLACE)
    assert len(_targets(prepared, INPLACE)) == 2 * 3 + 1 + 2  # 3 relu_ a block, stem, add_s
    assert not _targets(prepared, FUNCTIONAL)
    without = _prepare(exported, False, monkeypatch)
    assert set(_targets(without, FUNCTIONAL)) == set(_targets(prepared, INPLACE))


@pytest.mark.torchao
def test_in_place_ops_sit_where_torchaos_prepared_graph_has_them():
    pytest.importorskip("torchao")
    from tests.peer_annotation import library, make_int8_quantizer

    model = _small_resnet()
    inputs = model.example_inputs()
    graphs = {
        name: library(name).prepare_pt2e(
            torch.export.export(model, inputs).module(), make_int8_quantizer(library(name))
        )
        for name in ("pt2e_quant", "torchao")
    }
    ours, peer = graphs["pt2e_quant"], graphs["torchao"]
    assert _targets(ours, INPLACE + FUNCTIONAL) == _targets(peer, INPLACE + FUNCTIONAL)
    assert _targets(ours, INPLACE)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_outputs_and_observer_statistics_equal_the_functional_prepare(monkeypatch, grad):
    model = _small_resnet()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    restored = _prepare(exported, True, monkeypatch)
    functional = _prepare(exported, False, monkeypatch)
    torch.manual_seed(1)
    batches = [torch.randn(1, 3, 16, 16) for _ in range(3)]
    with torch.set_grad_enabled(grad):
        for x in batches:
            torch.testing.assert_close(restored(x), functional(x), rtol=0, atol=0)
    expected = _observer_state(functional)
    got = _observer_state(restored)
    assert got.keys() == expected.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)


def test_convert_produces_the_graph_of_a_prepare_without_the_pass(monkeypatch):
    model = _small_resnet()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    converted = {}
    for restore in (True, False):
        prepared = _prepare(exported, restore, monkeypatch)
        prepared(*inputs)
        converted[restore] = convert_pt2e(prepared)
        # convert works on a copy: the prepared model still writes in place, converts again
        assert _targets(prepared, INPLACE) == (_targets(prepared, INPLACE) if restore else {})
        assert str(convert_pt2e(prepared).graph) == str(converted[restore].graph)
    assert str(converted[True].graph) == str(converted[False].graph)
    assert converted[True].code == converted[False].code
    assert not _targets(converted[True], INPLACE)
    assert all(inplace_origin(n) is None for n in converted[True].graph.nodes)
    torch.testing.assert_close(converted[True](*inputs), converted[False](*inputs), rtol=0, atol=0)


def test_qat_prepared_model_keeps_functional_ops_and_trains():
    torch.manual_seed(0)
    model = ResNetBottleneck(16, 4).train()
    inputs = model.example_inputs()
    exported = torch.export.export(model, inputs).module()
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )
    prepared = prepare_qat_pt2e(exported, quantizer)
    # (the add_s left are training batch norm's num_batches_tracked updates)
    functionalized = [n for n in prepared.graph.nodes if inplace_origin(n) is not None]
    assert {n.target for n in functionalized} == set(FUNCTIONAL)
    loss = prepared(*inputs).square().mean()
    loss.backward()
    assert any(p.grad is not None for p in prepared.parameters())


class _KeepingObserver(MinMaxObserver):
    """An observer that keeps a reference to what it saw (a recorder would)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return super().forward(x)


def test_an_observer_that_may_keep_its_input_keeps_the_op_functional(monkeypatch):
    model = ResNetBottleneck(16, 4).eval()
    inputs = model.example_inputs()
    config = get_symmetric_quantization_config(is_per_channel=True)
    spec = type(config.input_activation)
    keeping = spec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=_KeepingObserver.with_args(eps=2**-12),
    )
    config = type(config)(keeping, keeping, config.weight, config.bias)
    exported = torch.export.export(model, inputs).module()
    prepared = _prepare(exported, True, monkeypatch, XNNPACKQuantizer().set_global(config))
    # the residual add reads two observed values: its write would reach what they keep
    assert _targets(prepared, FUNCTIONAL) == {"add_": aten.add.Tensor}


# ------------------------------------------------------------------- the pass alone


class ConvRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.register_buffer("offset", torch.ones(1, 2, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu_(self.conv(x))


def _observed_conv_relu() -> tuple[GraphModule, Node, Node]:
    """``conv -> observer -> relu`` with the relu functionalized, as prepare leaves it."""
    gm = torch.export.export(ConvRelu().eval(), (torch.randn(1, 2, 3, 3),)).module()
    assert replace_inplace_ops(gm)
    conv = next(n for n in gm.graph.nodes if n.target == aten.conv2d.default)
    relu = next(n for n in gm.graph.nodes if n.target == aten.relu.default)
    gm.add_module("observer", MinMaxObserver())
    with gm.graph.inserting_after(conv):
        observed = gm.graph.call_module("observer", (conv,))
    relu.replace_input_with(conv, observed)
    return gm, relu, conv


def test_pass_restores_an_unobservable_write_and_reports_it():
    gm, relu, _ = _observed_conv_relu()
    assert restore_inplace_ops(gm) is True
    assert relu.target == aten.relu_.default
    assert restore_inplace_ops(gm) is False


def test_a_value_read_after_the_write_keeps_the_op_functional():
    gm, relu, conv = _observed_conv_relu()
    with gm.graph.inserting_after(relu):
        later = gm.graph.call_function(aten.neg.default, (conv,))
    output = next(iter(gm.graph.find_nodes(op="output")))
    output.args = ((relu, later),)
    assert restore_inplace_ops(gm) is False
    assert relu.target == aten.relu.default


@pytest.mark.parametrize("source", ["placeholder", "get_attr", "view"])
def test_inputs_buffers_and_views_keep_the_op_functional(source):
    gm, relu, conv = _observed_conv_relu()
    if source == "placeholder":
        value = next(iter(gm.graph.find_nodes(op="placeholder")))
    elif source == "get_attr":
        with gm.graph.inserting_before(relu):
            value = gm.graph.get_attr("offset")
    else:
        with gm.graph.inserting_before(relu):
            value = gm.graph.call_function(aten.view.default, (conv, [1, 2, 9]))
    relu.args = (value,)
    assert restore_inplace_ops(gm) is False
    assert relu.target == aten.relu.default


def test_observer_output_aliases_its_input_only_when_asked():
    gm, relu, conv = _observed_conv_relu()
    observed = relu.args[0]
    assert alias_classes(gm)[observed] is not alias_classes(gm)[conv]
    classes = alias_classes(gm, modules_return_input=True)
    assert classes[observed] is classes[conv]


def test_a_model_input_written_in_place_stays_in_place():
    class AddToInput(nn.Module):
        def forward(self, x):
            x.add_(1.0)
            return x * 2

    gm = torch.export.export(AddToInput(), (torch.randn(2, 2),)).module()
    prepared = prepare_pt2e(gm, FunctionQuantizer(lambda m: None))
    add = next(n for n in prepared.graph.nodes if n.target == aten.add_.Tensor)
    assert inplace_origin(add) is None  # never functionalized, so never "restored"
    assert our_observer  # the observer package stays importable alongside the pass
