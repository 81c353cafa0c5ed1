"""XNNPACKQuantizer scoping vs ExecuTorch's: mixed configs give the same graph and outputs.

ExecuTorch annotates scope by scope (module names, module types, operator types, global), each
pass claiming the patterns whose nodes all lie in its scope. What that means for a pattern
that spans an op and its fused relu / batch norm is easy to get wrong one node at a time, so
each case below sets the same scopes on both quantizers, runs both pipelines from one export
and asserts the same quantized edges and bit-identical outputs:

* an operator-type config covers the whole pattern anchored at that op (conv + relu under
  ``set_operator_type(aten.conv2d, ...)``, conv + bn + relu under QAT), not just the anchor;
* a dynamic operator-type config cannot take conv + relu, so the global config does;
* a module scope does not pull in a relu outside it, even when both configs are equal.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.graph_check import quantized_edges
from tests.quantizers.xnnpack._xnnpack_peer_run import run_peer_and_ours

aten = torch.ops.aten

# config knobs, given to each library's own get_symmetric_quantization_config
PT: dict = {}
PC = {"is_per_channel": True}
DYNAMIC = {"is_per_channel": True, "is_dynamic": True}
QAT_PT = {"is_qat": True}
QAT_PC = {"is_per_channel": True, "is_qat": True}


class ConvRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))

    def example_inputs(self):
        return (torch.randn(2, 3, 6, 6),)


class ConvBnReluHead(nn.Module):
    """conv ─ bn ─ relu ─ mean ─ fc: the batch norm is a sibling module of the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))

    def example_inputs(self):
        return (torch.randn(2, 3, 6, 6),)


class LinearRelu(nn.Module):
    """fc ─ F.relu: the relu is outside the ``fc`` module."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x))

    def example_inputs(self):
        return (torch.randn(2, 4),)


class AddRelu(nn.Module):
    def forward(self, x, y):
        return F.relu(x + y)

    def example_inputs(self):
        return (torch.randn(2, 4), torch.randn(2, 4))


Setters = Callable[[object, Callable[..., object]], object]

#: name -> (model, QAT?, the setter calls, given a quantizer and its library's config factory)
CASES: dict[str, tuple[type[nn.Module], bool, Setters]] = {
    "operator_type_conv_takes_its_relu": (
        ConvRelu,
        False,
        lambda q, cfg: q.set_global(cfg(**PT)).set_operator_type(aten.conv2d.default, cfg(**PC)),
    ),
    "operator_type_linear_takes_its_relu": (
        LinearRelu,
        False,
        lambda q, cfg: q.set_global(cfg(**PT)).set_operator_type(aten.linear.default, cfg(**PC)),
    ),
    "operator_type_add_alone_takes_its_relu": (
        AddRelu,
        False,
        lambda q, cfg: q.set_operator_type(aten.add.Tensor, cfg(**PT)),
    ),
    "dynamic_operator_type_leaves_conv_relu_to_global": (
        ConvRelu,
        False,
        lambda q, cfg: q.set_global(cfg(**PC)).set_operator_type(
            aten.conv2d.default, cfg(**DYNAMIC)
        ),
    ),
    "module_scope_does_not_take_a_relu_outside_it": (
        LinearRelu,
        False,
        lambda q, cfg: q.set_global(cfg(**PC)).set_module_name("fc", cfg(**PC)),
    ),
    "qat_operator_type_conv_takes_bn_and_relu": (
        ConvBnReluHead,
        True,
        lambda q, cfg: q.set_global(cfg(**QAT_PT)).set_operator_type(
            aten.conv2d.default, cfg(**QAT_PC)
        ),
    ),
}


@pytest.fixture(scope="module")
def peer(peer_pattern_cache):
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval

    return xnnpack_quantizer, move_exported_model_to_eval


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize("case", sorted(CASES))
def test_scoped_configs_match_executorch(peer, case: str) -> None:
    from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

    peer_module, peer_to_eval = peer
    model_cls, qat, configure = CASES[case]
    torch.manual_seed(0)
    model = model_cls().train(qat)
    example = model.example_inputs()
    test_input = tuple(torch.randn_like(t) for t in example)
    exported = torch.export.export(model, example).module()
    (theirs, theirs_out), (ours, ours_out) = run_peer_and_ours(
        configure(peer_module.XNNPACKQuantizer(), peer_module.get_symmetric_quantization_config),
        configure(XNNPACKQuantizer(), get_symmetric_quantization_config),
        exported,
        example,
        test_input,
        peer_to_eval,
        qat,
    )
    assert quantized_edges(ours) == quantized_edges(theirs)
    assert any(str(n.target).startswith("quantized_decomposed.") for n in ours.graph.nodes)
    assert all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out, strict=True))
