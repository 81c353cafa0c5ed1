"""XNNPACKQuantizer scoping: global, operator type, module type, module name and filters.

Users migrate from ExecuTorch's quantizer with the same setters and the same precedence
(module name over module type over operator type over global). Ours also accepts None in
every scope, meaning "leave it float" (ExecuTorch asserts), and a filter function that
restricts every rule; the tests check that an excluded node neither gets quantized nor pulls
quantization in through a fused relu or a qparams-sharing pool.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, move_exported_model_to_eval, prepare_qat_pt2e
from quantizers.xnnpack.quantizer import XNNPACKQuantizer
from tests.graph_check import assert_node_order, count_ops
from tests.models.xnnpack_patterns import (
    IMAGE,
    X4,
    ConvPoolHead,
    LinearModel,
)
from tests.quantizers.xnnpack._xnnpack_quantize import (
    DQ,
    DQ_CH,
    PER_CHANNEL,
    PER_TENSOR,
    QAT,
    Q,
    aten,
    call_nodes,
    global_quantizer,
    quantize,
    weight_dq,
)


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


class Outer(nn.Module):
    """first (Linear) ─ inner_a (Inner.fc) ─ inner_b (Inner.fc) ─ last (Linear) ─ add"""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.last = nn.Linear(4, 4), nn.Linear(4, 4)
        self.inner_a, self.inner_b = Inner(), Inner()

    def forward(self, x):
        y = self.last(self.inner_b(self.inner_a(self.first(x))))
        return y + x


def _linear_weight_kinds(m: GraphModule) -> list[str | None]:
    """Per linear in graph order: "channel", "tensor" or None (float)."""
    kinds = {DQ_CH: "channel", DQ: "tensor"}
    return [
        kinds[dq.target] if (dq := weight_dq(n)) else None
        for n in call_nodes(m, aten.linear.default)
    ]


def test_scoping_precedence_name_over_type_over_operator_over_global() -> None:
    quantizer = (
        XNNPACKQuantizer()
        .set_global(PER_TENSOR)
        .set_operator_type(aten.linear, PER_CHANNEL)
        .set_module_type(Inner, PER_TENSOR)
        .set_module_name("inner_b", None)
    )
    m = quantize(Outer(), X4, quantizer)
    # first, last: operator type; inner_a: module type; inner_b: module name (None = float)
    assert _linear_weight_kinds(m) == ["channel", "tensor", None, "channel"]
    # the add is only covered by the global config
    (add,) = call_nodes(m, aten.add.Tensor)
    assert all(a.target is DQ for a in add.args)


def test_module_name_none_excludes_even_under_a_global_config() -> None:
    quantizer = XNNPACKQuantizer().set_global(PER_CHANNEL).set_module_name("first", None)
    m = quantize(Outer(), X4, quantizer)
    assert _linear_weight_kinds(m) == [None, "channel", "channel", "channel"]


@pytest.mark.parametrize(
    ("exclude", "kinds"),
    [
        (lambda q: q.set_module_name("inner_a", None), ["channel", None, "channel", "channel"]),
        (lambda q: q.set_module_type(Inner, None), ["channel", None, None, "channel"]),
        (lambda q: q.set_operator_type(aten.linear, None), [None] * 4),
        (lambda q: q.set_operator_type(aten.linear.default, None), [None] * 4),
    ],
    ids=["module_name", "module_type", "operator_packet", "operator_overload"],
)
def test_none_scope_leaves_that_scope_float(exclude, kinds: list) -> None:
    """ExecuTorch asserts on a None config; here it excludes the scope from the global one."""
    m = quantize(Outer(), X4, exclude(global_quantizer(PER_CHANNEL)))
    assert _linear_weight_kinds(m) == kinds
    (add,) = call_nodes(m, aten.add.Tensor)  # outside every excluded scope: still quantized
    assert all(a.target is DQ for a in add.args)


def test_global_none_leaves_everything_float() -> None:
    m = quantize(Outer(), X4, XNNPACKQuantizer().set_global(None))
    assert sum(count_ops(m)[op] for op in (Q, DQ, DQ_CH)) == 0


def test_filter_function_restricts_every_rule() -> None:
    quantizer = global_quantizer(PER_CHANNEL).set_filter_function(lambda n: n.name != "linear_2")
    m = quantize(Outer(), X4, quantizer)
    assert _linear_weight_kinds(m) == ["channel", "channel", None, "channel"]


def test_filter_function_keeps_propagation_out_of_excluded_nodes() -> None:
    quantizer = global_quantizer(PER_TENSOR).set_filter_function(lambda n: "pool" not in n.name)
    m = quantize(ConvPoolHead(), IMAGE, quantizer)
    for op in (aten.max_pool2d.default, aten.adaptive_avg_pool2d.default):
        (node,) = call_nodes(m, op)
        assert not any(u.target is Q for u in node.users), op


def test_fused_relu_in_another_scope_is_not_pulled_in() -> None:
    quantizer = global_quantizer(PER_TENSOR).set_module_name("relu", None)
    m = quantize(LinearModel(relu=True), X4, quantizer)
    # the linear is quantized on its own; the excluded relu stays float
    assert_node_order(m, [DQ, DQ, aten.linear.default, Q, DQ, aten.relu.default])
    (relu,) = call_nodes(m, aten.relu.default)
    assert not any(u.target is Q for u in relu.users)


def test_setters_reject_foreign_configs() -> None:
    with pytest.raises(TypeError, match="get_symmetric_quantization_config"):
        XNNPACKQuantizer().set_global({"input_activation": None})


class ConvBnRelu(nn.Module):
    """conv ─ bn ─ F.relu, conv and bn sibling modules, the relu in neither."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def test_scoped_qat_conv_takes_its_batch_norm_from_a_sibling_module() -> None:
    """``set_module_name("conv", QAT)``: the batch norm folds into the conv, so it follows the
    conv's scope (the relu outside it does not). Split apart, the conv's output would be
    quantized before a batch norm that is never folded. (ExecuTorch leaves this conv float.)"""
    exported = torch.export.export(ConvBnRelu().train(), IMAGE).module()
    prepared = prepare_qat_pt2e(exported, XNNPACKQuantizer().set_module_name("conv", QAT))
    prepared(*IMAGE)
    converted = move_exported_model_to_eval(convert_pt2e(prepared))
    assert count_ops(converted)[aten.batch_norm.default] == 0
    (conv,) = call_nodes(converted, aten.conv2d.default)
    assert weight_dq(conv).target is DQ_CH
    assert [u.target for u in conv.users] == [Q]
