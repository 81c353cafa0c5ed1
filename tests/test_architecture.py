"""The layering the tree promises, checked on the source itself.

* The core (``pt2e_quant``) never imports a backend (``quantizers``), not even lazily inside a
  function: backends build on the core and reach it through the registry.
* Inside the core, imports point down the layers of ``docs/ARCHITECTURE.md``: a module imports
  only from its own layer and the ones below.
* Every aten overload that belongs to an op family is spelled in ``pt2e_quant/ops/families.py``
  and imported from there; a few rule tables and graph builders must name exact overloads (the
  overloads a partitioner config accepts, the ops a rewrite emits) and are listed, with why.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pt2e_quant.ops import families
from tests.paths import REPO

CORE = REPO / "pt2e_quant"
BACKENDS = REPO / "quantizers"

#: files that may spell a family member, and why
SPELLING_ALLOWED = {
    "pt2e_quant/ops/families.py": "the one owner",
    "pt2e_quant/passes/simulate_batch_norm_folding.py": "emits the fold simulation's ops",
    "pt2e_quant/passes/fold_simulated_batch_norm.py": "matches the ops the simulation emitted",
    "pt2e_quant/reference/torchao_forms.py": "emits torchao's reference ops, matches its patterns",
    "pt2e_quant/reference/exact_forms.py": "emits the exact reference ops",
    "pt2e_quant/algorithms/smoothing_rewrite.py": "emits SmoothQuant's scaling multiply",
    "pt2e_quant/graph/conv_batch_norm.py": "torchao's QAT rewrite order names exact overloads",
    "quantizers/xnnpack/rules.py": "ExecuTorch's shared-qparams list names exact overloads",
    "quantizers/xnnpack/delegation.py": "the XNNPACK partitioner's configs name exact overloads",
    "quantizers/x86_inductor/inductor_rewrites/use_weight_int8pack_mm.py": (
        "emits the exact ops Inductor's kernels take"
    ),
    "quantizers/x86_inductor/inductor_rewrites/use_int_mm.py": (
        "emits the exact ops Inductor's _int_mm pattern matches"
    ),
    "quantizers/x86_inductor/inductor_rewrites/rewrite_addmm_as_linear.py": (
        "emits the linear Inductor's qlinear pattern matches"
    ),
    "quantizers/x86_inductor/inductor_rewrites/decompose_per_token_quantization.py": (
        "emits the per-token kernels' exact ops"
    ),
    "quantizers/x86_inductor/rules.py": "torchao's recipe names exact overloads (cat, not concat)",
}


def _library_files() -> list[Path]:
    return sorted([*CORE.rglob("*.py"), *BACKENDS.rglob("*.py")])


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):  # every import, lazy ones inside functions included
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.append(str(node.args[0].value))
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_core_module_never_imports_a_backend(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    offending = [
        m for m in _imported_modules(tree) if m == "quantizers" or m.startswith("quantizers.")
    ]
    assert offending == [], f"{path.relative_to(REPO)} imports {offending}"


def test_importing_the_core_loads_no_backend_module() -> None:
    code = (
        "import pt2e_quant, pt2e_quant.coverage, pt2e_quant.debug, sys; "
        "print([m for m in sys.modules if m == 'quantizers' or m.startswith('quantizers.')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "[]"


#: the core's layers, bottom up; a module may import from its own layer or one listed before it
LAYERS = (
    "errors",
    "ops",
    "contract",
    "graph",
    "observer",
    "fake_quantize",
    "reference",
    "passes",
    "pipeline",
    "distributed",
    "debug",
    "algorithms",
    "coverage",
    "quantize_model",
    "cli",
    "__main__",
    "__init__",
)


def _layer(path: Path) -> str:
    relative = path.relative_to(CORE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_core_module_imports_only_its_layer_and_below(path: Path) -> None:
    rank = LAYERS.index(_layer(path))
    above = sorted(
        {
            module.split(".")[1]
            for module in _imported_modules(ast.parse(path.read_text(), str(path)))
            if module.startswith("pt2e_quant.") and LAYERS.index(module.split(".")[1]) > rank
        }
    )
    assert above == [], f"{path.relative_to(REPO)} ({LAYERS[rank]}) imports from {above}"


def _family_members() -> dict[object, str]:
    members: dict[object, str] = {}
    for name in families.__all__:
        value = getattr(families, name)
        if isinstance(value, frozenset):
            for op in value:
                members.setdefault(op, name)
    return members


def _spelled_overloads(tree: ast.AST) -> list[tuple[int, object]]:
    """``<x>.aten.<packet>.<overload>`` / ``aten.<packet>.<overload>`` attribute chains
    (code only: docstrings and comments are not attribute chains)."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)):
            continue
        packet = node.value
        base = packet.value
        base_name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
        if base_name not in ("aten", "_aten"):
            continue
        overload = getattr(getattr(torch.ops.aten, packet.attr, None), node.attr, None)
        if isinstance(overload, torch._ops.OpOverload):
            found.append((node.lineno, overload))
    return found


def test_family_members_are_spelled_only_in_the_families_module() -> None:
    members = _family_members()
    offences = []
    for path in _library_files():
        relative = str(path.relative_to(REPO))
        if relative in SPELLING_ALLOWED:
            continue
        for line, op in _spelled_overloads(ast.parse(path.read_text(), relative)):
            if op in members:
                offences.append(f"{relative}:{line} spells {op} (import {members[op]})")
    assert offences == []


def test_the_allow_list_names_existing_files() -> None:
    assert [f for f in SPELLING_ALLOWED if not (REPO / f).exists()] == []
