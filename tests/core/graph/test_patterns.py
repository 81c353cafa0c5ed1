"""The pattern language (``pt2e_quant.graph.patterns``): rows, the matcher and the driver.

Every graph here is a real ``torch.export`` graph, so the tests see the aten calls the
backends' rows and the reference rewrite see.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pt2e_quant.graph.patterns import (
    ANY,
    ANY_USERS,
    Either,
    Op,
    Rule,
    Var,
    apply,
    chain,
    find,
    match,
    op,
    rewrite,
    run,
    then,
    then_either_operand,
)

aten = torch.ops.aten
CONV = (aten.conv2d.default,)
RELU = (aten.relu.default,)
ADD = (aten.add.Tensor,)


def _graph(module: nn.Module, *inputs: torch.Tensor) -> torch.fx.Graph:
    return torch.export.export(module, inputs).module().graph


def _calls(graph: torch.fx.Graph, target) -> list[torch.fx.Node]:
    return [n for n in graph.nodes if n.op == "call_function" and n.target == target]


class ConvRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class ConvWithTwoReaders(nn.Module):
    """The conv's output feeds a relu and the model's second output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y), y


class ConvAddRelu(nn.Module):
    """A residual block whose add reads the conv as its second operand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.relu(x + self.conv(x))


class TwoConvRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        return torch.relu(self.b(torch.relu(self.a(x))))


X = torch.randn(1, 2, 4, 4)
Y = torch.randn(1, 2, 4, 4)  # a distinct second input: export treats one tensor passed twice as one


def _taken(graph, rules, skip=None) -> list[tuple[str, tuple[str, ...]]]:
    """What ``run`` hands to an act that takes every match: (rule, matched targets)."""
    seen = []

    def act(rule, m):
        seen.append((rule.name, tuple(str(n.target) for n in m.nodes)))
        return True

    run(graph, rules, act, skip)
    return seen


# ---- chains anchored at their first op -----------------------------------------------------


def test_chain_anchor_matches_conv_then_relu_from_the_conv():
    graph = _graph(ConvRelu(), X)
    rule = Rule("conv_relu", chain(CONV, then(RELU)), None, anchor="anchor")
    (conv,) = _calls(graph, aten.conv2d.default)
    (relu,) = _calls(graph, aten.relu.default)

    m = match(rule, conv)

    assert m is not None
    assert m.root is relu and m.nodes == (conv, relu)
    assert m["anchor"] is conv
    assert match(rule, relu) is None  # a match starts at the anchor only


def test_chain_link_needs_the_anchor_to_have_a_sole_user():
    graph = _graph(ConvWithTwoReaders(), X)
    rule = Rule("conv_relu", chain(CONV, then(RELU)), None, anchor="anchor")
    (conv,) = _calls(graph, aten.conv2d.default)

    assert match(rule, conv) is None
    lone = Rule("conv", chain(CONV), None, anchor="anchor")
    assert match(lone, conv).nodes == (conv,)


def test_then_either_operand_finds_the_conv_as_second_operand():
    graph = _graph(ConvAddRelu(), X)
    (conv,) = _calls(graph, aten.conv2d.default)
    (add,) = _calls(graph, aten.add.Tensor)
    first_only = Rule("conv_add", chain(CONV, then(ADD)), None, anchor="anchor")
    either = Rule(
        "conv_add_relu", chain(CONV, then_either_operand(ADD), then(RELU)), None, anchor="anchor"
    )

    assert match(first_only, conv) is None  # add(x, conv): the conv is not the first argument
    m = match(either, conv)
    assert m is not None and m.nodes[:2] == (conv, add)
    assert m.root.target == aten.relu.default


# ---- users, check, Either, Var -------------------------------------------------------------


def test_users_inside_rejects_a_reader_outside_the_match_and_any_users_allows_it():
    graph = _graph(ConvWithTwoReaders(), X)
    (relu,) = _calls(graph, aten.relu.default)
    inside = Rule("r", op(RELU, op(CONV, ...)), None)
    anywhere = Rule("r", op(RELU, op(CONV, ..., users=ANY_USERS)), None)
    exactly_two = Rule("r", op(RELU, op(CONV, ..., users=2)), None)

    assert match(inside, relu) is None
    assert match(anywhere, relu) is not None
    assert match(exactly_two, relu) is not None


def test_check_is_asked_of_the_matched_node():
    graph = _graph(ConvRelu(), X)
    (relu,) = _calls(graph, aten.relu.default)
    asked = []

    def refuse(node):
        asked.append(node)
        return False

    assert match(Rule("r", op(RELU, op(CONV, ..., check=refuse)), None), relu) is None
    assert [n.target for n in asked] == [aten.conv2d.default]
    assert match(Rule("r", op(RELU, op(CONV, ..., check=lambda n: True)), None), relu)


def test_either_takes_the_first_alternative_that_matches():
    graph = _graph(ConvAddRelu(), X)
    (add,) = _calls(graph, aten.add.Tensor)
    rule = Rule(
        "add",
        Either(
            op(ADD, op(CONV, ...), Var("other"), ...), op(ADD, Var("other"), op(CONV, ...), ...)
        ),
        None,
    )

    m = match(rule, add)

    assert m is not None and m["other"].op == "placeholder"


def test_var_used_twice_must_see_the_same_value():
    class Square(nn.Module):
        def forward(self, x, y):
            return x + x, x + y

    graph = _graph(Square(), X, Y)
    same, different = _calls(graph, aten.add.Tensor)
    rule = Rule("double", op(ADD, Var("a"), Var("a"), ...), None)

    assert match(rule, same)["a"].name == "x"
    assert match(rule, different) is None
    # one node cannot bind two names: x + x is not a + b
    assert match(Rule("sum", op(ADD, Var("a"), Var("b"), ...), None), same) is None


def test_overload_packet_matches_any_overload():
    assert aten.add.Tensor in Op(aten.add, (ANY, ANY)).targets
    assert aten.add.Scalar in Op(aten.add, (ANY, ANY)).targets


@pytest.mark.parametrize("anchor", ["missing", "twice"])
def test_rule_anchor_must_name_exactly_one_op(anchor):
    pattern = op(RELU, op(CONV, ..., name="twice"), op(CONV, ..., name="twice"))
    rule = Rule("bad", pattern, None, anchor=anchor)

    with pytest.raises(ValueError, match=f"anchor '{anchor}' must name exactly one Op"):
        _ = rule.start


# ---- the driver ----------------------------------------------------------------------------


def test_run_keeps_the_first_of_overlapping_matches_and_rows_in_table_order():
    graph = _graph(TwoConvRelu(), X)
    rules = [
        Rule("conv_relu", chain(CONV, then(RELU)), None, anchor="anchor"),
        Rule("conv", chain(CONV), None, anchor="anchor"),
    ]
    conv, relu = str(aten.conv2d.default), str(aten.relu.default)

    # each row runs over the whole graph; the act decides (here: takes everything)
    assert _taken(graph, rules) == [
        ("conv_relu", (conv, relu)),
        ("conv_relu", (conv, relu)),
        ("conv", (conv,)),
        ("conv", (conv,)),
    ]


def test_run_drops_a_match_overlapping_one_taken_by_the_same_row():
    graph = _graph(TwoConvRelu(), X)
    inner_relu, outer_relu = _calls(graph, aten.relu.default)
    # the inner relu matches relu(...); the outer relu(conv(relu(...))) contains the inner relu
    rule = Rule("relu_chain", Either(op(RELU, op(CONV, op(RELU, ...), ...)), op(RELU, ...)), None)

    assert [m.nodes for m in find(graph, rule)] == [
        (inner_relu,),
        (inner_relu, outer_relu.args[0], outer_relu),
    ]
    assert _taken(graph, [rule]) == [("relu_chain", (str(aten.relu.default),))]


def test_run_skip_leaves_out_matches_starting_at_skipped_nodes():
    graph = _graph(TwoConvRelu(), X)
    first_conv = _calls(graph, aten.conv2d.default)[0]
    rule = Rule("conv_relu", chain(CONV, then(RELU)), None, anchor="anchor")

    assert len(_taken(graph, [rule], skip=lambda n: n is first_conv)) == 1
    assert len(find(graph, rule, skip=lambda n: n is first_conv)) == 1
    assert len(find(graph, rule)) == 2


def test_run_reports_whether_the_act_took_anything():
    graph = _graph(ConvRelu(), X)
    rule = Rule("conv_relu", chain(CONV, then(RELU)), None, anchor="anchor")

    assert run(graph, [rule], lambda r, m: False) is False
    assert run(graph, [rule], lambda r, m: True) is True


def test_rewrite_replaces_the_match_and_keeps_the_output_numerics():
    module = torch.export.export(ConvRelu(), (X,)).module()
    expected = module(X)
    graph = module.graph

    def clamp_instead(emit, x, relu):
        return emit(aten.clamp_min.default, x, 0.0)

    changed = rewrite(graph, [Rule("relu", op(RELU, Var("x"), name="relu"), clamp_instead)])
    module.recompile()

    assert changed
    assert not _calls(graph, aten.relu.default)
    (clamp,) = _calls(graph, aten.clamp_min.default)
    assert clamp.args[0].target == aten.conv2d.default
    # the replacement carries the replaced node's lowering metadata
    assert (
        clamp.meta["stack_trace"]
        == _calls(_graph(ConvRelu(), X), aten.relu.default)[0].meta["stack_trace"]
    )
    torch.testing.assert_close(module(X), expected, rtol=0, atol=0)


def test_rewrite_reads_the_replacement_of_an_earlier_match_of_the_same_row():
    class AddChain(nn.Module):
        def forward(self, x, y):
            return (x + y) + y

    module = torch.export.export(AddChain(), (X, Y)).module()
    expected = module(X, Y)
    graph = module.graph

    def as_sub_of_negation(emit, a, b):
        return emit(aten.sub.Tensor, a, emit(aten.neg.default, b))

    apply(graph, Rule("add", op(ADD, Var("a"), Var("b")), as_sub_of_negation))
    graph.lint()
    module.recompile()

    assert not _calls(graph, aten.add.Tensor)
    assert len(_calls(graph, aten.sub.Tensor)) == 2
    torch.testing.assert_close(module(X, Y), expected)
