"""Working copies: independent graphs and containers, shared tensors, correct code."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant.graph.copy_module import copy_graph_module
from tests.models import CondLinear, ConvWithBNRelu


def _exported(model: nn.Module):
    model = model.eval()
    inputs = model.example_inputs()
    return torch.export.export(model, inputs).module(), inputs


@pytest.mark.parametrize("recompile", [True, False])
def test_copy_runs_like_the_original_and_shares_tensors(recompile):
    gm, inputs = _exported(ConvWithBNRelu(relu=True))
    copy = copy_graph_module(gm, recompile=recompile)
    assert torch.equal(copy(*inputs), gm(*inputs))
    assert copy.graph is not gm.graph
    assert type(copy) is not type(gm)  # its own class, so recompiling it leaves gm's forward
    weights = dict(gm.named_parameters())
    for name, tensor in copy.named_parameters():
        assert tensor is weights[name]


def test_editing_the_copy_leaves_the_original_alone():
    gm, inputs = _exported(ConvWithBNRelu(relu=True))
    expected = gm(*inputs)
    code = gm.code
    copy = copy_graph_module(gm)
    relus = [n for n in copy.graph.nodes if n.target == torch.ops.aten.relu.default]
    assert relus
    for node in relus:
        node.target = torch.ops.aten.sigmoid.default
    copy.recompile()
    assert not torch.equal(copy(*inputs), expected)
    conv_owner = next(n for n, _ in copy.named_children() if n != "_guards_fn")
    setattr(copy, conv_owner, nn.Module())  # replace a whole container in the copy
    assert gm.code == code
    assert torch.equal(gm(*inputs), expected)
    assert hasattr(getattr(gm, conv_owner), "weight")


def test_copy_keeps_export_attributes_and_rebinds_train_eval():
    gm, _ = _exported(ConvWithBNRelu(relu=True))
    copy = copy_graph_module(gm)
    assert copy.range_constraints == gm.range_constraints
    assert copy._in_spec == gm._in_spec and copy._out_spec == gm._out_spec
    assert copy.eval.__self__ is copy and copy.train.__self__ is copy
    assert copy.meta == gm.meta and copy.meta is not gm.meta


def test_copy_gives_bodies_their_own_graphs():
    gm, inputs = _exported(CondLinear())
    copy = copy_graph_module(gm, recompile=False)
    bodies = {name: m for name, m in gm.named_modules() if isinstance(m, torch.fx.GraphModule)}
    copied = {name: m for name, m in copy.named_modules() if isinstance(m, torch.fx.GraphModule)}
    assert bodies.keys() == copied.keys() and len(bodies) > 1
    for name, body in bodies.items():
        assert copied[name] is not body and copied[name].graph is not body.graph
    assert torch.equal(copy(*inputs), gm(*inputs))


def _node_summary(graph: torch.fx.Graph) -> list[tuple]:
    def name_of(value):
        return value.name if isinstance(value, torch.fx.Node) else value

    return [
        (
            n.name,
            n.op,
            n.target,
            torch.fx.node.map_aggregate(n.args, name_of),
            torch.fx.node.map_aggregate(n.kwargs, name_of),
            n.type,
            sorted(n.meta),
            sorted(u.name for u in n.users),
        )
        for n in graph.nodes
    ]


def test_copied_graph_matches_torch_graph_copy_and_stays_editable():
    """The copy appends nodes without create_node's SymInt scan; it must hold what
    Graph.graph_copy would (names, args, users, types, meta keys) and be a working graph:
    node lookups, the name registry and the node count all know the copied nodes."""
    gm, _ = _exported(ConvWithBNRelu(relu=True))
    reference = torch.fx.Graph()
    output = reference.graph_copy(gm.graph, {})
    reference.output(output).meta = dict(gm.graph.output_node().meta)  # ours keeps it too
    copied = copy_graph_module(gm).graph
    assert _node_summary(copied) == _node_summary(reference)
    assert len(copied.nodes) == len(gm.graph.nodes)
    for original, new in zip(gm.graph.nodes, copied.nodes, strict=True):
        assert new.meta is not original.meta and new.meta == original.meta
    relus = copied.find_nodes(op="call_function", target=torch.ops.aten.relu.default)
    assert [n.name for n in relus] == ["relu"]
    with copied.inserting_after(relus[0]):
        added = copied.call_function(torch.ops.aten.relu.default, (relus[0],))
    assert added.name not in {n.name for n in gm.graph.nodes}  # the registry knows "relu"
    copied.lint()
