"""A backend installed from outside the repository works by name everywhere, with no core change.

The toy backend below is a throw-away distribution written to a temporary folder: a package
(its quantizer quantizes linears, int8 per tensor) and a ``.dist-info`` whose
``entry_points.txt`` declares it under ``pt2e_quant.backends``, exactly as a ``pyproject.toml``
entry point installs it. With the folder on the path, ``quantize(backend="toy")``, the CLI's
``--backend toy`` and ``explain(..., backend="toy")`` find it through the registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pt2e_quant import explain, quantize
from pt2e_quant.contract import backends as registry
from pt2e_quant.contract.backends import Backend, get_backend, installed_backends, register
from tests.cli_models import tiny
from tests.paths import REPO

TOY_PACKAGE = '''
"""A backend that is not part of pt2e_quant: int8 linears, nothing else."""
import torch
from pt2e_quant import MinMaxObserver, Quantizer, QuantizationAnnotation, QuantizationSpec
from pt2e_quant.contract.backends import Backend

SPEC = QuantizationSpec(
    dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=MinMaxObserver,
)


class ToyQuantizer(Quantizer):
    coverage_name = "toy"

    def annotate(self, model):
        for node in model.graph.nodes:
            if node.target is torch.ops.aten.linear.default:
                inputs = {node.args[0]: SPEC, node.args[1]: SPEC}
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    inputs, SPEC, _annotated=True
                )
        return model

    def validate(self, model):
        pass

    def rule_ops(self):
        return frozenset({torch.ops.aten.linear.default})


def preset(*, per_tensor=False, dynamic=False, qat=False):
    return ToyQuantizer()


BACKEND = Backend(
    name="toy",
    preset=preset,
    quantizer_types=(ToyQuantizer,),
    title="Toy",
    description="a throw-away test backend",
    predict=lambda node, status: "toy int8" if status.quantized else "toy float",
    summarize=lambda counts: f"; toy runs {counts.get('toy int8', 0)} int8",
)
'''


@pytest.fixture
def toy_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy backend installed into ``tmp_path`` (package + dist-info), on ``sys.path``, and
    the registry made to read entry points afresh (and forget the toy afterwards)."""
    (tmp_path / "toy_backend").mkdir()
    (tmp_path / "toy_backend" / "__init__.py").write_text(textwrap.dedent(TOY_PACKAGE))
    info = tmp_path / "toy_backend-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pt2e_quant.backends]\ntoy = toy_backend:BACKEND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registered", {})
    monkeypatch.setattr(registry, "_entry_points_read", False)
    return tmp_path


def test_the_entry_point_backend_is_installed_next_to_ours(toy_distribution: Path) -> None:
    names = list(installed_backends())  # ours first, the toy (default order) last
    assert names[:2] == ["xnnpack", "x86"] and names[-1] == "toy"
    with pytest.raises(
        ValueError, match="backend must be one of 'xnnpack', 'x86', .*'toy', got 'tpu'"
    ):
        get_backend("tpu")


def test_quantize_and_explain_use_the_backend_by_name(toy_distribution: Path) -> None:
    model, example = tiny()
    result = quantize(model, example, backend="toy", calibration=[example], progress=False)
    assert type(result.quantizer).__name__ == "ToyQuantizer"
    linear = next(row for row in result.coverage.rows if row.op == "linear")
    assert linear.quantized and linear.prediction == "toy int8"
    assert result.coverage.summary().endswith("; toy runs 1 int8")
    report = explain(result.module, result.quantizer)  # the backend inferred from the type
    assert report.backend == "toy"
    assert "Toy prediction" in report.to_text()
    conv = next(row for row in report.rows if row.op == "conv2d")
    assert conv.reason == "no rule for this op in toy"


def test_the_cli_offers_and_runs_the_backend(toy_distribution: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(toy_distribution), str(REPO)])}
    command = [sys.executable, "-m", "pt2e_quant", "explain", "tests.cli_models:tiny"]
    result = subprocess.run(
        [*command, "--backend", "toy", "--calibration-batches", "1", "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    assert "Toy prediction" in result.stdout and "toy int8" in result.stdout
    usage = subprocess.run(
        [*command, "--backend", "tpu"], capture_output=True, text=True, cwd=REPO, env=environment
    )
    assert usage.returncode == 2
    assert "invalid choice: 'tpu' (choose from 'xnnpack', 'x86', " in usage.stderr
    assert "'toy')" in usage.stderr


def test_register_adds_a_backend_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registered", dict(registry.installed_backends()))
    xnnpack = get_backend("xnnpack")
    register(Backend(name="mine", preset=xnnpack.preset, quantizer_types=(), order=-1))
    assert list(installed_backends())[0] == "mine"
    model, example = tiny()
    result = quantize(model, example, backend="mine", calibration=[example], progress=False)
    assert result.coverage.backend == "mine"
    assert {row.prediction for row in result.coverage.rows} == {None}  # no predictor declared
    with pytest.raises(TypeError, match="register expects a pt2e_quant Backend"):
        register(object())  # type: ignore[arg-type]


def test_a_backend_name_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="Backend.name must be an identifier"):
        Backend(name="my backend", preset=lambda **_: None)
