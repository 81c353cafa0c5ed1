"""inline_grad_mode_regions moves a region body's attributes onto the parent under fresh names.

A ``no_grad`` body can read its own constants (or nested bodies) through get_attr; inlining
adopts them into the parent graph module, where an attribute of the same name may already
exist. Taking that name would silently replace the parent's tensor.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import Graph, GraphModule

from pt2e_quant.passes.driver import run_pass
from pt2e_quant.passes.inline_grad_mode_regions import inline_grad_mode_regions

SET_GRAD = torch.ops.higher_order.wrap_with_set_grad_enabled


def _region_model() -> GraphModule:
    """``x -> [no_grad: x * body.scale (2)] + parent.scale (3)``: both attributes named "scale"."""
    body_graph = Graph()
    x = body_graph.placeholder("x")
    body_graph.output((body_graph.call_function(torch.mul, (x, body_graph.get_attr("scale"))),))
    body_root = torch.nn.Module()
    body_root.register_buffer("scale", torch.tensor(2.0))
    body = GraphModule(body_root, body_graph)

    graph = Graph()
    x = graph.placeholder("x")
    region = graph.call_function(SET_GRAD, (False, graph.get_attr("body_graph"), x))
    scaled = graph.call_function(operator.getitem, (region, 0))
    graph.output(graph.call_function(torch.add, (scaled, graph.get_attr("scale"))))
    root = torch.nn.Module()
    root.register_buffer("scale", torch.tensor(3.0))
    root.add_module("body_graph", body)
    return GraphModule(root, graph)


def test_adopted_body_attribute_does_not_overwrite_a_parent_attribute() -> None:
    """The body's ``scale`` is adopted under a new name and the parent's ``scale`` keeps its
    value, so the inlined graph still computes ``x * 2 + 3``."""
    gm = _region_model()
    x = torch.tensor([1.0, -1.0])
    assert run_pass(gm, inline_grad_mode_regions) is True
    assert SET_GRAD not in [n.target for n in gm.graph.nodes]
    assert torch.equal(gm.get_buffer("scale"), torch.tensor(3.0))
    assert torch.equal(gm(x), x * 2 + 3)
