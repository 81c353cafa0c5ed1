"""Our side of deliberate differences from the peers that no parity test reaches.

Each case is listed in the README's "Deliberate differences"; the peers' behaviour (a crash, a
silently dropped scope, a float batch norm) was found by differential runs and is described
there. These tests pin what ours does, so the README stays true.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pt2e_quant import convert_pt2e, move_exported_model_to_eval, prepare_pt2e, prepare_qat_pt2e
from quantizers import X86InductorQuantizer, XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import count_ops
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    DQ,
    DQ_CH,
    Q,
    quantize,
    x86_config,
)

aten = torch.ops.aten


def _qat(model: nn.Module, example: tuple, config_kwargs: dict) -> torch.fx.GraphModule:
    config = get_symmetric_quantization_config(is_qat=True, **config_kwargs)
    exported = torch.export.export(model.train(), example).module()
    prepared = prepare_qat_pt2e(exported, XNNPACKQuantizer().set_global(config))
    prepared(*example)
    return move_exported_model_to_eval(convert_pt2e(prepared))


class Conv3dBn(nn.Module):
    def __init__(self, transposed: bool) -> None:
        super().__init__()
        conv = nn.ConvTranspose3d if transposed else nn.Conv3d
        self.conv = conv(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def test_xnnpack_qat_folds_a_3d_conv_batch_norm() -> None:
    """(ExecuTorch's QAT keeps a float batch norm, with its counter update, after the conv.)"""
    for transposed in (False, True):
        converted = _qat(Conv3dBn(transposed), (torch.randn(2, 2, 3, 4, 4),), {})
        ops = count_ops(converted)
        assert ops[aten.batch_norm.default] == 0 and ops[Q] > 0, transposed


class DepthwiseConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_xnnpack_dynamic_qat_leaves_a_depthwise_conv_batch_norm_float() -> None:
    """A lone depthwise conv has no dynamic rule; with a batch norm after it, neither
    (ExecuTorch's conv-bn rules quantize it dynamically)."""
    converted = _qat(DepthwiseConvBn(), (torch.randn(2, 4, 5, 5),), {"is_dynamic": True})
    assert not any(str(n.target).startswith("quantized_decomposed") for n in converted.graph.nodes)


class SamePaddingConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding="same", dilation=2)

    def forward(self, x):
        return self.conv(x)

    def example_inputs(self):
        return (torch.randn(1, 3, 8, 8),)


def test_x86_quantizes_a_same_padding_conv() -> None:
    """``aten.conv2d.padding`` (torchao's X86 quantizer raises "not an aten conv2d operator")."""
    converted = quantize(SamePaddingConv())
    (conv,) = [n for n in converted.graph.nodes if n.target is aten.conv2d.padding]
    assert [a.target for a in conv.args[:2]] == [DQ, DQ_CH]


class Nested(nn.Module):
    """blk.l0 ─ blk.l1: two linears inside one block."""

    def __init__(self) -> None:
        super().__init__()
        self.blk = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    def forward(self, x):
        return self.blk(x)


def _weight_qdq(converted) -> list[object]:
    return [n.args[1].target for n in converted.graph.nodes if n.target is aten.linear.default]


def test_nested_module_scopes_innermost_wins_in_any_order() -> None:
    """(Both peers apply whichever scope was set first.)"""
    example = (torch.randn(2, 4),)
    per_tensor, per_channel = (
        get_symmetric_quantization_config(),
        get_symmetric_quantization_config(is_per_channel=True),
    )
    outer_first = XNNPACKQuantizer().set_module_name("blk", per_tensor)
    outer_first.set_module_name("blk.0", per_channel)
    inner_first = XNNPACKQuantizer().set_module_name("blk.0", per_channel)
    inner_first.set_module_name("blk", per_tensor)
    results = []
    for quantizer in (outer_first, inner_first):
        model = Nested().eval()
        prepared = torch.export.export(model, example).module()
        prepared = prepare_pt2e(prepared, quantizer)
        prepared(*example)
        results.append(_weight_qdq(convert_pt2e(prepared)))
    assert results == [[DQ_CH, DQ], [DQ_CH, DQ]]


class CatOutsideScope(nn.Module):
    """b (Linear) ─ cat(b(x), x): the cat is outside the only configured scope."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cat([self.b(x), x], dim=1)


def test_xnnpack_cat_outside_every_scope_stays_float() -> None:
    """(ExecuTorch's cat rule claims every cat in its first config pass, whatever the scope.)"""
    example = (torch.randn(2, 4),)
    quantizer = XNNPACKQuantizer().set_module_name("b", get_symmetric_quantization_config())
    prepared = prepare_pt2e(
        torch.export.export(CatOutsideScope().eval(), example).module(), quantizer
    )
    prepared(*example)
    converted = convert_pt2e(prepared)
    (cat,) = [n for n in converted.graph.nodes if n.target is aten.cat.default]
    assert not any(u.target is Q for u in cat.users)
    assert count_ops(converted)[DQ_CH] + count_ops(converted)[DQ] > 0  # "b" is quantized


class ScopedConvResidual(nn.Module):
    """blk.conv ─ add(x) ─ relu, the add and relu outside ``blk``."""

    def __init__(self) -> None:
        super().__init__()
        self.blk = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1))

    def forward(self, x):
        return F.relu(self.blk(x) + x)

    def example_inputs(self):
        return (torch.randn(1, 3, 6, 6),)


def test_x86_conv_add_fusion_takes_the_anchor_convs_scope() -> None:
    """The add's other input is quantized with the conv's (reduce_range) config, so Inductor
    can fuse the sum (torchao quantizes the conv alone and leaves that input float)."""
    quantizer = X86InductorQuantizer().set_global(x86_config())
    quantizer.set_module_name_qconfig("blk", x86_config(reduce_range=True))
    converted = quantize(ScopedConvResidual(), quantizer)
    (add,) = [n for n in converted.graph.nodes if n.target in (aten.add.Tensor, aten.add_.Tensor)]
    extra = next(a for a in add.args if isinstance(a, torch.fx.Node) and a.target is DQ)
    assert (extra.args[-3], extra.args[-2]) == (0, 127)
