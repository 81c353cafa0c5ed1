"""Debug-handle numbering contracts users rely on when they re-run or walk the numbering.

``generate_numeric_debug_handle`` may be called again after a pass added nodes; the new nodes
must get ids above every existing one, whatever order the existing ids sit in, or two ops would
share a handle and the debugger would compare unrelated values. ``bfs_trace_with_node_process``
is public: a callback that counts or collects nodes must see each node once even when two
control-flow calls share one body.
"""

from __future__ import annotations

from collections import Counter

import torch

from pt2e_quant.debug import bfs_trace_with_node_process, generate_numeric_debug_handle
from pt2e_quant.graph.node_meta import CUSTOM_KEY, NUMERIC_DEBUG_HANDLE_KEY, get_debug_handle


class _TwoConds(torch.nn.Module):
    """Two ``cond`` calls with the same branch functions::

    x ─ cond(p, sin, cos) ─ cond(p, sin, cos) ─ out
    """

    def forward(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        def true_fn(v):
            return v.sin()

        def false_fn(v):
            return v.cos()

        y = torch.cond(p, true_fn, false_fn, (x,))
        return torch.cond(p, true_fn, false_fn, (y,))


def _export(model: torch.nn.Module, *inputs: torch.Tensor) -> torch.export.ExportedProgram:
    return torch.export.export(model, inputs)


def test_new_ids_start_above_the_largest_existing_id_not_the_last_seen() -> None:
    """Existing ids out of graph order (100, then 2): the new last node must get 101."""
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.Sigmoid())
    ep = _export(model, torch.randn(2))
    generate_numeric_debug_handle(ep)
    ops = [n for n in ep.graph.nodes if n.op == "call_function"]
    assert [get_debug_handle(n) for n in ops] == [1, 2, 3]
    ops[0].meta[CUSTOM_KEY][NUMERIC_DEBUG_HANDLE_KEY] = 100
    del ops[-1].meta[CUSTOM_KEY][NUMERIC_DEBUG_HANDLE_KEY]  # stands for a node added later

    generate_numeric_debug_handle(ep)

    handles = [get_debug_handle(n) for n in ep.graph.nodes if n.op == "call_function"]
    assert handles[-1] == 101
    assert len(set(handles)) == len(handles), handles


def test_a_body_shared_by_two_calls_is_visited_once() -> None:
    """A body referenced by two ``cond`` calls is one set of nodes: each is visited once."""
    ep = _export(_TwoConds(), torch.tensor(True), torch.randn(3))
    gm = ep.graph_module
    gm.true_graph_1 = gm.true_graph_0  # both conds now call the same branch bodies
    gm.false_graph_1 = gm.false_graph_0

    visits = Counter()
    bfs_trace_with_node_process(ep, lambda node: visits.update([id(node)]))

    assert visits and set(visits.values()) == {1}
    body_nodes = [n for n in gm.true_graph_0.graph.nodes if n.op == "call_function"]
    assert all(visits[id(n)] == 1 for n in body_nodes)
