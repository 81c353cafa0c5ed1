"""The vendor backends as the registry, the CLI and a user without the vendor's package see them.

No vendor package is needed here: knobs are refused before anything is imported, missing
packages are simulated (or really missing: MediaTek's and NXP's SDKs are not on PyPI), and the
listing must not import ExecuTorch at all.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pt2e_quant import quantize
from pt2e_quant.contract.backends import get_backend, installed_backends
from pt2e_quant.errors import MissingPackageError
from quantizers.vendors import requirements
from tests.cli_models import tiny
from tests.paths import REPO
from tests.quantizers.vendors.conftest import VENDOR_BACKENDS

VENDORS = REPO / "quantizers" / "vendors"
VENDOR_PACKAGES = ("executorch", "torchao", "coremltools", "nncf", "openvino", "tosa_serializer")


def test_every_vendor_module_is_an_entry_point_of_its_name() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    group = pyproject.split('[project.entry-points."pt2e_quant.backends"]')[1].split("\n[")[0]
    modules = sorted(
        path.stem for path in VENDORS.glob("*.py") if "\nBACKEND = Backend(" in path.read_text()
    )
    assert modules == sorted(VENDOR_BACKENDS)
    for name in modules:
        assert f'\n{name} = "quantizers.vendors.{name}:BACKEND"' in group
        assert importlib.import_module(f"quantizers.vendors.{name}").BACKEND.name == name


def test_vendor_backends_are_listed_after_ours() -> None:
    names = list(installed_backends())
    assert names[:2] == ["xnnpack", "x86"]
    assert [n for n in names if n in VENDOR_BACKENDS] == sorted(VENDOR_BACKENDS)


def test_listing_the_backends_imports_no_vendor_package() -> None:
    modules = ", ".join(f"quantizers.vendors.{name}" for name in VENDOR_BACKENDS)
    code = (
        f"import sys, {modules}; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(VENDOR_PACKAGES)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]"


def test_vendor_modules_import_vendor_packages_inside_functions_only() -> None:
    for path in VENDORS.glob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module] if isinstance(node, ast.ImportFrom) else []
                names += [] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n and n.split(".")[0] in VENDOR_PACKAGES for n in names), path


REFUSED = [
    ("vulkan", "per_tensor"),
    ("vulkan", "qat"),
    ("qnn", "dynamic"),
    ("coreml", "dynamic"),
    ("cadence", "dynamic"),
    ("samsung", "dynamic"),
    ("cortex_m", "per_tensor"),
    ("cortex_m", "dynamic"),
    ("cortex_m", "qat"),
    ("openvino", "per_tensor"),
    ("openvino", "qat"),
    ("mediatek", "per_tensor"),
    ("mediatek", "qat"),
    ("nxp", "dynamic"),
]


@pytest.mark.parametrize(("name", "knob"), REFUSED)
def test_a_knob_the_vendor_lacks_is_refused_by_name(name: str, knob: str) -> None:
    with pytest.raises(ValueError, match=f"^{knob}: the {name} backend does not support it"):
        get_backend(name).preset(**{knob: True})


def test_per_tensor_support_is_declared_as_the_presets_behave() -> None:
    refused = {name for name, knob in REFUSED if knob == "per_tensor"}
    unsupported = {n for n in VENDOR_BACKENDS if not get_backend(n).supports_per_tensor}
    assert unsupported == refused


@pytest.mark.parametrize(
    ("name", "missing", "install"),
    [
        ("mediatek", "mtk_converter", "NeuroPilot Express SDK"),
        ("nxp", "eiq_neutron_sdk", "eIQ Neutron SDK"),
    ],
)
def test_a_vendor_sdk_off_pypi_is_named_when_missing(name: str, missing: str, install: str) -> None:
    if importlib.util.find_spec(missing) is not None:
        pytest.skip(f"{missing} is installed here")
    with pytest.raises(MissingPackageError, match=f"backend '{name}' needs the module '{missing}'"):
        get_backend(name).preset()
    with pytest.raises(MissingPackageError, match=install):
        get_backend(name).preset()


@pytest.mark.parametrize(
    ("name", "module", "command"),
    [
        ("qnn", "executorch", "pip install executorch==1.5.1"),
        ("arm", "tosa_serializer", "pip install tosa-tools==2026.5.0 ml_dtypes==0.5.1"),
        ("coreml", "coremltools", "pip install coremltools==9.0"),
        ("openvino", "nncf", "pip install nncf==3.4.0"),
    ],
)
def test_quantize_names_the_pip_command_of_a_missing_package(
    name: str, module: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = requirements.Requirement.is_installed
    monkeypatch.setattr(
        requirements.Requirement,
        "is_installed",
        lambda self: self.module != module and installed(self),
    )
    model, example = tiny()
    with pytest.raises(MissingPackageError, match=f"needs the module '{module}'.*: {command}$"):
        quantize(model, example, backend=name, progress=False)


def test_a_vendor_import_that_fails_names_backend_and_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(module: str):
        raise RuntimeError("SDK check failed at import")

    monkeypatch.setattr(requirements.importlib, "import_module", broken)
    with pytest.raises(
        MissingPackageError,
        match="backend 'samsung': importing executorch.backends.samsung.quantizer failed with "
        "RuntimeError: SDK check failed at import",
    ):
        get_backend("samsung").preset()


@pytest.mark.parametrize(
    ("name", "sdk"),
    [
        ("qnn", "Qualcomm's QNN SDK"),
        ("samsung", "Samsung's Exynos AI Studio"),
        ("mediatek", "MediaTek's NeuroPilot"),
        ("nxp", "NXP's eIQ Neutron SDK"),
    ],
)
def test_write_pte_says_which_sdk_lowering_needs(name: str, sdk: str, tmp_path: Path) -> None:
    with pytest.raises(MissingPackageError, match=f"backend '{name}': writing a .pte needs {sdk}"):
        get_backend(name).write_pte(None, tmp_path / "model.pte")
    assert not (tmp_path / "model.pte").exists()


@pytest.fixture
def vendor_distribution(tmp_path: Path) -> dict[str, str]:
    """A dist-info declaring the vendor entry points, as ``pip install -e .`` writes them, on
    the path of a subprocess: the CLI lists what the installed metadata says."""
    info = tmp_path / "vendor_backends-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vendor-backends\nVersion: 1.0\n")
    lines = [f"{name} = quantizers.vendors.{name}:BACKEND" for name in VENDOR_BACKENDS]
    (info / "entry_points.txt").write_text("[pt2e_quant.backends]\n" + "\n".join(lines) + "\n")
    path = os.pathsep.join([str(tmp_path), str(REPO)])
    return {**os.environ, "PYTHONPATH": path, "QNN_SDK_ROOT": ""}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pt2e_quant", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)


def test_the_cli_names_what_a_vendor_backend_is_missing(vendor_distribution) -> None:
    result = _cli(
        "explain", "tests.cli_models:tiny", "--backend", "mediatek", env=vendor_distribution
    )
    assert result.returncode == 1
    assert "error: backend 'mediatek' needs the module 'mtk_converter'" in result.stderr
    usage = _cli(
        "explain", "tests.cli_models:tiny", "--backend", "vulkan", "--per-tensor",
        env=vendor_distribution,
    )  # fmt: skip
    assert usage.returncode == 2
    assert "--per-tensor: the vulkan backend only supports per-channel weights" in usage.stderr
