"""quantize(): every argument path, the user's model left untouched, and one-line errors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pt2e_quant.contract.backends import get_backend
from pt2e_quant.ops import qdq_ops
from pt2e_quant.pipeline.calibration import CalibrationError
from pt2e_quant.quantize_model import ExportFailedError, QuantizationResult, quantize
from tests.cli_models import ValueBranch, tiny
from tests.graph_check import count_ops

Q_TENSOR = qdq_ops.QUANTIZE_PER_TENSOR
DQ_CHANNEL = qdq_ops.DEQUANTIZE_PER_CHANNEL
DQ_TENSOR = qdq_ops.DEQUANTIZE_PER_TENSOR


class ConvBn(nn.Module):
    """x -> conv -> batch norm -> relu -> (flatten) linear: batch norm state to protect."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.linear = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def _batches(count: int, batch: int = 1) -> list[tuple[torch.Tensor]]:
    return [(torch.randn(batch, 3, 8, 8),) for _ in range(count)]


def _counting(batches: list, seen: list[int]):
    """A generator (no len()) that records how many batches were taken from it."""
    for batch in batches:
        seen.append(1)
        yield batch


@pytest.fixture(scope="module")
def xnnpack_result() -> QuantizationResult:
    model, example = tiny()
    return quantize(model, example, calibration=_batches(3), progress=False)


def test_default_backend_quantizes_and_reexports(xnnpack_result):
    counts = count_ops(xnnpack_result.module)
    assert counts[DQ_CHANNEL] == 2  # conv and linear weights, per channel by default
    assert counts[Q_TENSOR] >= 3
    buffer = io.BytesIO()
    torch.export.save(xnnpack_result.exported_program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(loaded.module()(x), xnnpack_result.module(x))


def test_coverage_is_lazy_and_cached(xnnpack_result):
    assert "coverage" not in vars(xnnpack_result)
    coverage = xnnpack_result.coverage
    assert coverage is xnnpack_result.coverage
    assert coverage.summary().startswith("3 compute ops: 3 quantized")


def test_report_matches_ops_through_debug_handles(xnnpack_result):
    report = xnnpack_result.report()
    labels = {row.op for row in report.rows}
    assert {"conv2d", "linear"} <= labels
    assert report.worst()[0].activation_sqnr > 10


@pytest.mark.parametrize("qat", [False, True])
def test_model_is_not_mutated(qat):
    torch.manual_seed(0)
    model = ConvBn().train()
    model.linear.eval()  # mixed flags must come back exactly as they were
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def train(prepared):
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.5)
        for (x,) in _batches(2, batch=2):
            prepared(x).sum().backward()
            optimizer.step()

    example = (torch.randn(2, 3, 8, 8),)
    if qat:
        quantize(model, example, qat=True, train_fn=train, progress=False)
    else:
        quantize(model, example, calibration=_batches(2, batch=2), progress=False)
    assert [m.training for m in model.modules()] == flags
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_qat_calls_train_fn_with_the_prepared_model():
    model, example = tiny()
    calls = []

    def train(prepared):
        calls.append(prepared)
        prepared(*example)

    result = quantize(model, example, qat=True, train_fn=train, progress=False)
    assert len(calls) == 1 and isinstance(calls[0], torch.fx.GraphModule)
    assert count_ops(result.module)[DQ_CHANNEL] == 2


def test_dataloader_calibration_shows_batch_count(capsys):
    model, example = tiny()
    loader = DataLoader(TensorDataset(torch.randn(6, 3, 8, 8)), batch_size=1)
    result = quantize(model, example, calibration=loader, max_batches=4)
    assert "4/4" in capsys.readouterr().err  # tqdm's bar: len(loader) capped by max_batches
    assert count_ops(result.module)[Q_TENSOR] >= 3


def test_max_batches_stops_taking_batches():
    model, example = tiny()
    seen: list[int] = []
    quantize(model, example, calibration=_counting(_batches(5), seen), max_batches=2)
    assert len(seen) == 2


def test_lone_tensor_batches_are_wrapped_and_none_warns():
    model, example = tiny()
    quantize(model, example, calibration=[torch.randn(1, 3, 8, 8)], progress=False)
    with pytest.warns(UserWarning, match="calibration is None: calibrating on example_inputs"):
        quantize(model, example, progress=False)


def test_x86_backend_and_explicit_quantizer():
    model, example = tiny()
    x86 = quantize(model, example, backend="x86", calibration=_batches(2), progress=False)
    assert qdq_ops.QUANTIZE_PER_TENSOR in count_ops(x86.module)
    assert x86.coverage.summary().endswith("(+1 fused post-ops)")
    per_tensor = get_backend("xnnpack").preset(per_tensor=True)
    custom = quantize(model, example, per_tensor, calibration=_batches(2), progress=False)
    assert DQ_CHANNEL not in count_ops(custom.module)
    assert custom.quantizer is per_tensor and custom.backend is None  # inferred by explain


def test_dynamic_shapes_accept_other_batch_sizes():
    model, _ = tiny()
    batch = torch.export.Dim("batch", min=1, max=8)  # size-1 examples specialize: use 2
    result = quantize(
        model,
        (torch.randn(2, 3, 8, 8),),
        calibration=_batches(2, batch=3),
        dynamic_shapes={"x": {0: batch}},
        progress=False,
    )
    assert result.exported_program.module()(torch.randn(5, 3, 8, 8)).shape == (5, 5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"example_inputs": [torch.randn(1, 3, 8, 8)]}, "example_inputs must be a tuple"),
        ({"backend": "tpu"}, "backend must be one of 'xnnpack', 'x86', .*got 'tpu'"),
        ({"calibration": []}, "calibration is empty"),
        ({"calibration": torch.randn(2, 3, 8, 8)}, "calibration must be an iterable"),
        ({"qat": True}, "train_fn: qat=True needs train_fn"),
        ({"qat": True, "train_fn": print, "calibration": [()]}, "calibration is not used"),
        ({"train_fn": print}, "train_fn is only used with qat=True"),
        ({"max_batches": 0}, "max_batches must be a positive int"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, message):
    model, example = tiny()
    kwargs = {"example_inputs": example, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        quantize(model, **kwargs)


def test_per_tensor_is_refused_for_x86():
    with pytest.raises(ValueError, match="per_tensor: the x86 backend only supports per-channel"):
        get_backend("x86").preset(per_tensor=True)


def test_empty_iterator_and_wrong_shape_name_the_batch():
    model, example = tiny()
    with pytest.raises(CalibrationError, match="calibration is empty: it yielded no batch"):
        quantize(model, example, calibration=iter([]), progress=False)
    bad = [_batches(1)[0], (torch.randn(1, 4, 8, 8),)]
    with pytest.raises(CalibrationError) as info:
        quantize(model, example, calibration=bad, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        "calibration batch 1 has inputs ((1, 4, 8, 8)) but the model was exported with "
        "((1, 3, 8, 8))"
    )
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("strict", "fix"),
    [(False, "rewrite the branch with torch.cond"), (True, "retry with strict=False")],
)
def test_export_failure_carries_the_error_and_a_fix(strict, fix):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportFailedError) as info:
            quantize(ValueBranch(), (torch.randn(2, 4),), strict=strict, progress=False)
    message = str(info.value)
    assert message.startswith(f"could not export the model (torch.export.export, strict={strict})")
    assert "; likely fix: " in message and fix in message and "\n" not in message
    assert info.value.__cause__ is not None
