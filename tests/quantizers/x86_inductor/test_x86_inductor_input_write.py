"""X86: an in-place residual add into a model input, ``x2.add_(conv(x))`` / ``x += conv(x)``.

torchao quantizes the input the add writes, so Inductor fuses the add into the qconv; its
converted model then writes the sum into the dequantized copy and the caller's tensor is never
updated. Ours quantizes it the same way and writes the result back with a ``copy_``: the same
q/dq graph otherwise, bit-identical outputs, the same Inductor fusions, and the caller's
tensor still updated. Where a write back cannot make the copy right (the input was already
written through a view before the add), the input stays float with an
``AliasedWriteWarning`` and ``explain()`` predicts no fusion, as Inductor does.
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn

from pt2e_quant import convert_pt2e, explain, prepare_pt2e
from pt2e_quant.passes.insert_observers import AliasedWriteWarning
from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config
from tests.graph_check import qdq_and_compute_ops
from tests.quantizers.x86_inductor._x86_inductor_peer_run import torchao_x86_module

aten = torch.ops.aten


class AddIntoSecondInput(nn.Module):
    """conv2(x2.add_(conv(x))): the residual lands in the second model input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.conv2(x2.add_(self.conv(x)))


class ResidualIntoInput(nn.Module):
    """x += conv(relu(x)); conv2(x): the model writes its own input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x += self.conv(x)
        return self.conv2(x)


class ScaledThroughViewThenAdd(nn.Module):
    """x2.view(-1) *= 2 before x2.add_(conv(x)): a copy of x2 taken at the input would miss the
    first write, so x2 stays float."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x2.view(-1).mul_(2.0)
        return self.conv2(x2.add_(self.conv(x)))


def _inputs(model: nn.Module) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(1)
    count = 1 if isinstance(model, ResidualIntoInput) else 2
    return tuple(torch.randn(1, 3, 8, 8, generator=generator) for _ in range(count))


def _clones(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.clone() for t in inputs)


def _quantize(model: nn.Module, ours: bool, inputs: tuple[torch.Tensor, ...]):
    exported = torch.export.export(copy.deepcopy(model), _clones(inputs)).module()
    if ours:
        quantizer = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config()
        )
        prepare, convert = prepare_pt2e, convert_pt2e
    else:
        peer = torchao_x86_module()
        quantizer = peer.X86InductorQuantizer().set_global(
            peer.get_default_x86_inductor_quantization_config()
        )
        pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        prepare, convert = pipeline.prepare_pt2e, pipeline.convert_pt2e
    prepared = prepare(exported, quantizer)
    with torch.no_grad():
        prepared(*_clones(inputs))
    return convert(prepared)


def _without_write_back(ops: list[str]) -> list[str]:
    return [op for op in ops if op != "aten.copy.default"]  # copy_, spelled functionally


@pytest.mark.torchao
@pytest.mark.parametrize("model_cls", [AddIntoSecondInput, ResidualIntoInput])
def test_written_input_is_quantized_as_torchao_and_still_written(model_cls) -> None:
    torch.manual_seed(0)
    model = model_cls().eval()
    inputs = _inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AliasedWriteWarning)
        ours = _quantize(model, True, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _quantize(model, False, inputs)
    ours_ops = qdq_and_compute_ops(ours)
    assert ours_ops.count("aten.copy.default") == 1
    assert _without_write_back(ours_ops) == qdq_and_compute_ops(theirs)
    ours_inputs, theirs_inputs = _clones(inputs), _clones(inputs)
    with torch.no_grad():
        assert torch.equal(ours(*ours_inputs), theirs(*theirs_inputs))
    written = ours_inputs[-1]
    assert not torch.equal(written, inputs[-1])  # ours still writes the caller's tensor
    assert torch.equal(theirs_inputs[-1], inputs[-1])  # torchao's no longer does
    # what ours wrote is the sum the model computed from the quantized input
    (add,) = [n for n in ours.graph.nodes if n.target is aten.add_.Tensor]
    (write_back,) = [n for n in ours.graph.nodes if n.target is aten.copy_.default]
    assert write_back.args[1] is add and write_back.args[0].op == "placeholder"


def test_input_written_through_a_view_first_stays_float_with_a_warning() -> None:
    model = ScaledThroughViewThenAdd().eval()
    inputs = _inputs(model)
    with pytest.warns(
        AliasedWriteWarning, match=r"'x2' \(placeholder x2\) -> 'add_' \(written by 'mul_'\)"
    ):
        converted = _quantize(model, True, inputs)
    (add,) = [n for n in converted.graph.nodes if n.target is aten.add_.Tensor]
    assert add.args[0].op == "placeholder"  # float, written in place as the model says
    assert aten.copy_.default not in [n.target for n in converted.graph.nodes]
    eager_inputs, graph_inputs = _clones(inputs), _clones(inputs)
    with torch.no_grad():
        model(*eager_inputs)
        converted(*graph_inputs)
    torch.testing.assert_close(graph_inputs[1], eager_inputs[1], rtol=0.05, atol=0.05)


def _binary_fusions(converted, inputs) -> int:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(freezing=True, pre_grad_custom_pass=None):
        with torch.no_grad():
            torch.compile(converted)(*_clones(inputs))
    count = torch._dynamo.utils.counters["inductor"].get("qconv2d_binary_matcher_count", 0)
    torch._dynamo.reset()
    return count


def _predicted_add_fusions(converted) -> int:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    with torch._inductor.config.patch(freezing=True):
        report = explain(converted, quantizer)
    return sum(
        1
        for row in report.rows
        if row.op.startswith("add") and str(row.prediction).startswith("fused")
    )


@pytest.mark.inductor
@pytest.mark.torchao
def test_inductor_fuses_the_add_as_in_torchao_and_explain_says_so() -> None:
    torch.manual_seed(0)
    model = AddIntoSecondInput().eval()
    inputs = _inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = _quantize(model, True, inputs), _quantize(model, False, inputs)
    assert _binary_fusions(ours, inputs) == _binary_fusions(theirs, inputs) == 1
    assert _predicted_add_fusions(ours) == 1


@pytest.mark.inductor
def test_float_written_input_is_predicted_unfused_as_inductor_leaves_it() -> None:
    model = ScaledThroughViewThenAdd().eval()
    inputs = _inputs(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AliasedWriteWarning)
        converted = _quantize(model, True, inputs)
    assert _binary_fusions(converted, inputs) == 0
    assert _predicted_add_fusions(converted) == 0
