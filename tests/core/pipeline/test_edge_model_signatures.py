"""Edge case: unusual model signatures, through both real backends.

Tuple / dict outputs, keyword-only and scalar inputs, integer index inputs, unused inputs,
buffers and lifted constants, tied weights and a module called twice all change the shape of
the exported graph's placeholders, outputs and parameters. These tests pin that each still
quantizes, keeps eager's output structure, re-exports, and leaves the user's exported module
untouched; and that specialized scalars stay guarded and a tied weight is quantized once.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from tests.core.pipeline._edge_case_pipeline import (
    DQ_CH,
    QUANTIZERS,
    Q,
    all_equal,
    assert_untouched,
    close_within,
    quiet,
    run_pipeline,
    snapshot,
    xnnpack_quantizer,
)
from tests.models.edge_cases import SameModuleTwice


class TupleOutputs(nn.Module):
    """x ─ a ─┬──────────── out[0]
    └─ b ─ relu ─ out[1]"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: Tensor):
        hidden = self.a(x)
        return hidden, self.b(hidden).relu()


class DictOutputs(TupleOutputs):
    def forward(self, x: Tensor):
        hidden = self.a(x)
        return {"hidden": hidden, "out": self.b(hidden)}


class KeywordAndScalarInputs(nn.Module):
    """Keyword-only tensor input plus float / bool / int inputs (specialized by export)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor, *, y: Tensor, scale: float, flag: bool, n: int) -> Tensor:
        out = self.a(x) * scale
        if flag:
            out = out + y
        return out * n


class IndexInput(nn.Module):
    """int64 indices ─ embedding ─ add(x) ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.a = nn.Embedding(10, 4), nn.Linear(4, 4)

    def forward(self, indices: Tensor, x: Tensor) -> Tensor:
        return self.a(self.embedding(indices) + x)


class UnusedInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor, unused: Tensor) -> Tensor:
        return self.a(x)


class BufferAndConstant(nn.Module):
    """A registered buffer and a plain tensor attribute (a lifted constant) used in compute."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.register_buffer("offset", torch.randn(4))
        self.gain = torch.rand(4) + 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x + self.offset) * self.gain


class TiedWeights(nn.Module):
    """Two linears sharing one weight parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x).relu())


def _x() -> Tensor:
    return torch.randn(2, 4)


SIGNATURES: dict[str, tuple[type[nn.Module], Callable[[], tuple[tuple, dict]]]] = {
    "tuple_outputs": (TupleOutputs, lambda: ((_x(),), {})),
    "dict_outputs": (DictOutputs, lambda: ((_x(),), {})),
    "keyword_and_scalars": (
        KeywordAndScalarInputs,
        lambda: ((_x(),), {"y": _x(), "scale": 0.5, "flag": True, "n": 3}),
    ),
    "index_input": (
        IndexInput,
        lambda: ((torch.tensor([[1, 2], [3, 9]]), torch.randn(2, 2, 4)), {}),
    ),
    "unused_input": (UnusedInput, lambda: ((_x(), torch.randn(3)), {})),
    "buffer_and_constant": (BufferAndConstant, lambda: ((_x(),), {})),
    "tied_weights": (TiedWeights, lambda: ((_x(),), {})),
    "same_module_twice": (SameModuleTwice, lambda: ((_x(),), {})),
}


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_unusual_signatures_quantize_reexport_and_leave_the_model_alone(name, backend) -> None:
    """Output structure as in eager, close to float, re-export gives identical outputs, the
    user's exported module is unchanged (code, metadata, attributes, tensors)."""
    torch.manual_seed(0)
    model_cls, make_inputs = SIGNATURES[name]
    model = model_cls().eval()
    args, kwargs = make_inputs()
    gm = torch.export.export(model, args, kwargs).module()
    before = snapshot(gm)
    with quiet():
        converted = run_pipeline(gm, QUANTIZERS[backend](), [args], kwargs)
    assert_untouched(gm, before)
    assert any(n.target is Q for n in converted.graph.nodes)
    out = converted(*args, **kwargs)
    assert torch.utils._pytree.tree_structure(out) == torch.utils._pytree.tree_structure(
        model(*args, **kwargs)
    )
    assert close_within(out, model(*args, **kwargs), atol=0.1)
    program = torch.export.export(converted, args, kwargs)
    assert all_equal(program.module()(*args, **kwargs), out)


def test_specialized_scalar_inputs_stay_guarded_after_convert() -> None:
    """Export bakes float / int inputs into the graph; the converted model keeps export's
    guard, so another value raises instead of silently computing with the old one."""
    args, kwargs = SIGNATURES["keyword_and_scalars"][1]()
    gm = torch.export.export(KeywordAndScalarInputs().eval(), args, kwargs).module()
    with quiet():
        converted = run_pipeline(gm, xnnpack_quantizer(), [args], kwargs)
    with pytest.raises(AssertionError, match="scale == 0.5"):
        converted(*args, **{**kwargs, "scale": 0.7})
    with pytest.raises(AssertionError, match="n == 3"):
        converted(*args, **{**kwargs, "n": 4})


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_tied_weight_is_quantized_once_and_shared(backend: str) -> None:
    """One weight tensor, one observer, one folded int8 constant read by both linears."""
    args, _ = SIGNATURES["tied_weights"][1]()
    gm = torch.export.export(TiedWeights().eval(), args).module()
    with quiet():
        converted = run_pipeline(gm, QUANTIZERS[backend](), [args])
    weights = [
        n.args[1] for n in converted.graph.nodes if n.target == torch.ops.aten.linear.default
    ]
    assert [w.target for w in weights] == [DQ_CH, DQ_CH]
    assert weights[0].args[0] is weights[1].args[0]  # the same quantized constant
    assert weights[0].args[1:] == weights[1].args[1:]  # the same qparams
