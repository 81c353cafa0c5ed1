"""Tensors a pass orphans are deleted from the working copy, never from the user's model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from pt2e_quant.graph.copy_module import copy_graph_module
from pt2e_quant.passes.driver import remove_dead_nodes
from pt2e_quant.passes.unread_state import delete_unread_tensors
from quantizers import (
    X86InductorQuantizer,
    XNNPACKQuantizer,
    get_default_x86_inductor_quantization_config,
    get_symmetric_quantization_config,
)
from tests.models import ZOO
from tests.ptq import quantize_zoo_model


class ConvBnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


EXAMPLE = (torch.randn(2, 3, 6, 6),)


def _state_names(gm: nn.Module) -> set[str]:
    return set(gm.state_dict())


def _read_targets(gm: GraphModule) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}


def _exported() -> GraphModule:
    torch.manual_seed(0)
    return torch.export.export(ConvBnRelu().eval(), EXAMPLE).module()


def _xnnpack(is_qat: bool = False) -> XNNPACKQuantizer:
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)
    return XNNPACKQuantizer().set_global(config)


def test_prepare_drops_the_folded_batch_norm_state_and_keeps_the_users() -> None:
    exported = _exported()
    before = dict(exported.state_dict(keep_vars=True))
    assert {"bn.weight", "bn.running_var", "bn.num_batches_tracked"} <= set(before)
    prepared = prepare_pt2e(exported, _xnnpack())
    assert not [name for name in _state_names(prepared) if name.startswith("bn.")]
    assert not hasattr(prepared, "bn"), "the emptied batch-norm container stays behind"
    after = exported.state_dict(keep_vars=True)
    assert set(after) == set(before)
    assert all(after[name] is tensor for name, tensor in before.items())
    with torch.no_grad():
        prepared(*EXAMPLE)
    assert torch.allclose(prepared(*EXAMPLE), exported(*EXAMPLE), atol=1e-5)


def test_qat_convert_drops_the_batch_norm_state_and_leaves_the_prepared_model() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_pt2e(_exported(), _xnnpack(is_qat=True))
        prepared(*EXAMPLE)
    assert {"bn.running_mean", "bn.weight"} <= _state_names(prepared), "QAT trains the BN"
    converted = convert_pt2e(prepared)
    assert not [name for name in _state_names(converted) if name.startswith("bn.")]
    assert {"bn.running_mean", "bn.weight"} <= _state_names(prepared)


QUANTIZERS = {
    "xnnpack": _xnnpack,
    "x86": lambda: X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config()
    ),
}


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_tensor_of_a_converted_zoo_model_is_read(name: str, backend: str) -> None:
    """Nothing unread is left for ``torch.export`` to lift into a deployed program: leftover
    batch-norm state and histograms of observers shared between edges once made our XNNPACK
    ``.pte`` files up to 3.5x the size of ExecuTorch's own quantizer's."""
    converted, _ = quantize_zoo_model(name, QUANTIZERS[backend]())
    unread = _state_names(converted) - _read_targets(converted)
    assert not unread, f"{name} ({backend}) keeps tensors no node reads: {sorted(unread)}"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_tensor_of_a_qat_converted_zoo_model_is_read(name: str) -> None:
    """The same after QAT, where convert folds the trained batch norms and drops fake-quants."""
    torch.manual_seed(0)
    model = ZOO[name]().train()
    example = model.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_pt2e(torch.export.export(model, example).module(), _xnnpack(True))
        prepared(*example)
        converted = convert_pt2e(prepared)
    unread = _state_names(converted) - _read_targets(converted)
    assert not unread, f"{name} (QAT) keeps tensors no node reads: {sorted(unread)}"


class _UserModule(nn.Module):
    """A module of the user's own type: a working copy shares it with the user's model."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))


def _graph_reading(root: nn.Module, targets: list[str]) -> GraphModule:
    """A graph adding each target, read with get_attr, to its input."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    for target in targets:
        x = graph.call_function(torch.add, (x, graph.get_attr(target)))
    graph.output(x)
    return GraphModule(root, graph)


def test_delete_keeps_read_tensors_and_shared_modules_and_prunes_empty_containers() -> None:
    root = nn.Module()
    root.kept = nn.Parameter(torch.ones(3))
    root.box = nn.Module()
    root.box.orphan = nn.Parameter(torch.ones(3))
    root.mixed = nn.Module()
    root.mixed.orphan = nn.Parameter(torch.ones(3))
    root.mixed.still_read = nn.Parameter(torch.ones(3))
    root.user = _UserModule()
    gm = _graph_reading(root, ["kept", "box.orphan", "mixed.orphan", "mixed.still_read"])
    gm.user = root.user  # GraphModule only copies what the graph reads
    delete_unread_tensors(gm, ["kept", "box.orphan", "mixed.orphan", "user.scale"])
    assert hasattr(gm, "kept") and hasattr(gm.box, "orphan"), "tensors still read must stay"

    # Make the reads of box.orphan, mixed.orphan and user.scale dead, as a fold would.
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.args[1].target in ("box.orphan", "mixed.orphan"):
            node.replace_all_uses_with(node.args[0])
    user_read = gm.graph.get_attr("user.scale")
    assert not user_read.users
    remove_dead_nodes(gm)
    assert not hasattr(gm, "box"), "a container emptied by the deletion is removed"
    assert not hasattr(gm.mixed, "orphan") and hasattr(gm.mixed, "still_read")
    assert gm.user is root.user and hasattr(root.user, "scale"), "a shared module was edited"
    assert _state_names(gm) == {"kept", "mixed.still_read", "user.scale"}


def test_copy_then_delete_leaves_the_original_containers() -> None:
    root = nn.Module()
    root.box = nn.Module()
    root.box.orphan = nn.Parameter(torch.ones(3))
    original = _graph_reading(root, ["box.orphan"])
    working = copy_graph_module(original)
    (add,) = [n for n in working.graph.nodes if n.op == "call_function"]
    add.replace_all_uses_with(add.args[0])
    remove_dead_nodes(working)
    assert not hasattr(working, "box")
    assert hasattr(original, "box") and hasattr(original.box, "orphan")


def test_a_container_still_holding_other_state_is_kept() -> None:
    """Only what the pass orphaned goes: ``box.spare`` is read by no node either, but the
    pass did not name it (the user may want it in the state_dict), so ``box`` stays."""
    root = nn.Module()
    root.box = nn.Module()
    root.box.orphan = nn.Parameter(torch.ones(3))
    root.box.register_buffer("spare", torch.zeros(3))
    gm = _graph_reading(root, ["box.orphan"])
    gm.box.register_buffer("spare", torch.zeros(3))  # GraphModule copied only what is read
    (add,) = [n for n in gm.graph.nodes if n.op == "call_function"]
    add.replace_all_uses_with(add.args[0])
    remove_dead_nodes(gm)  # erases the add and the get_attr, then deletes box.orphan
    assert not hasattr(gm.box, "orphan")
    assert _state_names(gm) == {"box.spare"}
