"""quantize(): which backend the result's coverage report speaks for.

With the preset quantizer, ``backend`` is the backend the user chose, so the coverage report
must carry its predictions (XNNPACK delegation per op). With an explicit quantizer,
``backend=None`` is the documented way to say "infer it from the quantizer" and must be
accepted. ``dynamic=True`` picks the preset's dynamic config, the same the CLI's ``--dynamic``
builds, and the backend both default to is named once.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch

from pt2e_quant.ops import qdq_ops
from pt2e_quant.quantize_model import DEFAULT_BACKEND, preset_quantizer, quantize
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.cli_models import tiny


def _batches() -> list[tuple[torch.Tensor]]:
    return [(torch.randn(1, 3, 8, 8),) for _ in range(2)]


def test_preset_backend_is_the_coverage_backend() -> None:
    model, example = tiny()
    result = quantize(model, example, backend="xnnpack", calibration=_batches(), progress=False)

    assert result.backend == "xnnpack"
    assert any(row.prediction == "xnnpack int8" for row in result.coverage.rows)


def test_explicit_quantizer_accepts_backend_none() -> None:
    model, example = tiny()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    result = quantize(
        model, example, quantizer, backend=None, calibration=_batches(), progress=False
    )

    assert result.backend is None and result.quantizer is quantizer
    assert "XNNPACK will delegate" in result.coverage.summary()  # inferred from the type


def _ops(gm: torch.fx.GraphModule) -> list[object]:
    return [node.target for node in gm.graph.nodes if node.op == "call_function"]


def test_dynamic_quantizes_linear_activations_at_run_time() -> None:
    """dynamic=True means what the CLI's --dynamic means: the preset of the same backend with
    run-time activation qparams (choose_qparams -> q -> dq before each linear / conv)."""
    model, example = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # calibration=None is fine when dynamic
        result = quantize(model, example, dynamic=True, progress=False)
    ops = _ops(result.module)
    # the linear's input; XNNPACK's dynamic rules leave the conv -> relu pattern float
    assert ops.count(qdq_ops.CHOOSE_QPARAMS) == 1
    assert ops.count(qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC) == 1
    assert ops.count(qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC) == 1
    assert qdq_ops.QUANTIZE_PER_TENSOR not in ops  # no static activation quantization
    (linear,) = [n for n in result.module.graph.nodes if n.target is torch.ops.aten.linear.default]
    assert qdq_ops.is_dynamic_dequantize(linear.args[0])
    assert result.quantizer.global_config == preset_quantizer(dynamic=True).global_config
    assert result.backend == DEFAULT_BACKEND
    predictions = {row.op: row.prediction for row in result.coverage.rows}
    assert predictions["linear"] == "xnnpack int8 (dynamic)"
    assert torch.allclose(result.module(*example), model(*example), atol=0.1)


def test_dynamic_with_an_explicit_quantizer_is_refused() -> None:
    model, example = tiny()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with pytest.raises(ValueError, match=r"dynamic=True configures the backend preset.*XNNPACK"):
        quantize(model, example, quantizer, dynamic=True)
    with pytest.raises(ValueError, match="dynamic must be True or False, got 'yes'"):
        quantize(model, example, dynamic="yes")  # type: ignore[arg-type]


def test_the_default_backend_is_named_once() -> None:
    """quantize() and the CLI's --backend default to the same DEFAULT_BACKEND."""
    from pt2e_quant.cli import build_parser

    assert inspect.signature(quantize).parameters["backend"].default == DEFAULT_BACKEND
    assert build_parser().parse_args(["explain", "m:f"]).backend == DEFAULT_BACKEND
