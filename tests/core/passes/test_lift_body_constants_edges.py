"""lift_body_constants beyond one flat cond: name clashes with model attributes, nested bodies.

Convert leaves per-channel scales inside control-flow bodies; the pass moves them onto the
enclosing graph as ``<body>_<constant>`` buffers passed as operands. A model attribute of that
name must survive, and constants of an inner body must end up outside every body, or the
quantized model cannot be re-exported or saved.
"""

from __future__ import annotations

import io

import torch
from torch import Tensor, nn
from torch.fx import GraphModule

import pt2e_quant.observer as our_observer
from pt2e_quant import convert_pt2e, prepare_pt2e
from tests.core.contract.quantizer_fixtures import ConvLinearQuantizer, int8_specs


def _branch_inputs() -> list[Tensor]:
    """Inputs that between them take every branch of both models below."""
    positive = torch.rand(2, 4) + 0.1
    inner_false = positive.clone()
    inner_false[0, 0] = -0.05
    return [positive, inner_false, -positive]


def _quantize(model: nn.Module) -> GraphModule:
    calibration = _branch_inputs()
    gm = torch.export.export(model, (calibration[0],)).module()
    prepared = prepare_pt2e(gm, ConvLinearQuantizer(*int8_specs(our_observer)))
    for x in calibration:
        prepared(x)
    return convert_pt2e(prepared)


class CondWithLookalikeBuffer(nn.Module):
    """A cond over two linears plus a user buffer whose name is the one the pass would give the
    true branch's first lifted scale: ``true_graph_0__scale_0``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear_a = nn.Linear(4, 4)
        self.linear_b = nn.Linear(4, 4)
        self.register_buffer("true_graph_0__scale_0", torch.full((4,), 5.0))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cond(x.sum() > 0, self.linear_a, self.linear_b, (x,))
        return out + self.true_graph_0__scale_0


class NestedCond(nn.Module):
    """cond(x.sum() > 0) whose true branch is itself a cond(x[0, 0] > 0) over two linears."""

    def __init__(self) -> None:
        super().__init__()
        self.inner_a = nn.Linear(4, 4)
        self.inner_b = nn.Linear(4, 4)
        self.outer_b = nn.Linear(4, 4)

    def _inner(self, x: Tensor) -> Tensor:
        return torch.cond(x[0, 0] > 0, self.inner_a, self.inner_b, (x,))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(x.sum() > 0, self._inner, self.outer_b, (x,))


def test_lifted_scale_does_not_overwrite_a_model_buffer_of_the_same_name() -> None:
    """A lifted constant takes a fresh name when the obvious one is taken; overwriting the
    user's buffer would silently change what the quantized model computes."""
    torch.manual_seed(0)
    model = CondWithLookalikeBuffer().eval()
    converted = _quantize(model)
    assert torch.equal(converted.get_buffer("true_graph_0__scale_0"), torch.full((4,), 5.0))
    for x in _branch_inputs():  # int8 error is ~0.3 here; a lost buffer would be off by ~5
        assert torch.allclose(converted(x), model(x), atol=0.5)


def test_nested_cond_constants_are_lifted_out_of_every_body() -> None:
    """Inner bodies are lifted first so the outer lift carries their scales up to the root:
    the converted nested-cond model re-exports and round-trips through torch.export.save."""
    torch.manual_seed(0)
    model = NestedCond().eval()
    inputs = (_branch_inputs()[1],)
    converted = _quantize(model)
    assert torch.allclose(converted(*inputs), model(*inputs), atol=0.05)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(converted, inputs), buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    assert torch.equal(loaded(*inputs), converted(*inputs))
