"""The README's supported-ops table: current, generated from the rule tables, and true.

* the README region is exactly what :func:`supported_ops_markdown` generates;
* taking a rule out of a table changes the table (so it is generated, not written);
* known cells read as expected, and the CLI's ``--check`` / ``--write`` work;
* the table agrees with the quantizers: every op a preset quantizes in the zoo has a cell,
  and the limits the annotators check in code (dynamic conv is 2-D only) hold.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tools.supported_ops as supported_ops
from pt2e_quant import prepare_pt2e
from pt2e_quant.contract.annotation import get_annotation
from quantizers import EmbeddingQuantizer, X86InductorQuantizer, XNNPACKQuantizer
from quantizers.embedding import quantizer as embedding
from quantizers.x86_inductor import rules as x86_inductor_rules
from quantizers.xnnpack import rules as xnnpack_rules
from tests.models import ZOO, export_model
from tests.paths import REPO
from tools.supported_ops import (
    BEGIN,
    COLUMNS,
    END,
    NONE,
    extract_region,
    main,
    op_name,
    supported_ops_cells,
    supported_ops_markdown,
)

ROOT = REPO
README = ROOT / "README.md"
aten = torch.ops.aten


# ------------------------------------------------------------------ README is current


def test_readme_region_is_generated_table() -> None:
    region = extract_region(README.read_text())
    assert region == supported_ops_markdown(), (
        "README.md's supported-ops table is stale (a rule table changed). Regenerate it with\n"
        "    .venv/bin/python -m tools.supported_ops --write README.md\n"
        "and review the diff shown by --check README.md."
    )


def test_section_sits_after_backends() -> None:
    text = README.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[headings.index("## Backends") + 1] == "## Supported ops"
    assert text.index("## Supported ops") < text.index(BEGIN) < text.index(END)


# ------------------------------------------------------- generated from the rule tables


def _without_rule(rules: tuple, name: str) -> tuple:
    kept = tuple(rule for rule in rules if rule.name != name)
    assert len(kept) == len(rules) - 1, f"no rule named {name!r}"
    return kept


def test_dropping_xnnpack_cat_rule_empties_its_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    before = supported_ops_cells()["cat"]
    monkeypatch.setattr(xnnpack_rules, "RULES", _without_rule(xnnpack_rules.RULES, "cat"))
    after = supported_ops_cells()["cat"]
    assert before["xnnpack"] != NONE and after["xnnpack"] == NONE
    assert after["x86"] == before["x86"]  # the x86 propagation still keeps cat on int8


def test_dropping_x86_linear_unary_rule_removes_gelu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "`gelu`" in supported_ops_markdown()
    rules = _without_rule(x86_inductor_rules.FUSION_RULES, "linear_unary")
    monkeypatch.setattr(x86_inductor_rules, "FUSION_RULES", rules)
    assert "gelu" not in supported_ops_cells()
    assert "gelu" not in supported_ops_markdown()
    assert "gelu" not in supported_ops_cells()["linear"]["x86"]


def test_shrinking_op_sets_changes_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    bags = {op for op in embedding.EMBEDDING_OPS if op_name(op) == "embedding_bag"}
    monkeypatch.setattr(embedding, "EMBEDDING_OPS", embedding.EMBEDDING_OPS - bags)
    shared = xnnpack_rules.SHARED_QPARAM_OPS - {aten.max_pool2d.default}
    monkeypatch.setattr(xnnpack_rules, "SHARED_QPARAM_OPS", shared)
    cells = supported_ops_cells()
    assert "embedding_bag" not in cells
    assert cells["max_pool2d"]["xnnpack"] == NONE


# ----------------------------------------------------------------------- known cells


def test_known_cells() -> None:
    cells = supported_ops_cells()
    assert cells["conv2d"]["xnnpack"].startswith("int8, per-channel int8 weights; fuses relu")
    assert cells["conv2d"]["x86"].startswith("uint8, per-channel int8 weights; fuses add(+relu)")
    assert cells["linear"]["xnnpack_dynamic"] == "dynamic int8, per-channel int8 weights"
    assert cells["add"]["xnnpack_dynamic"] == NONE  # dynamic configs quantize weighted ops only
    assert cells["add"]["x86"] == "fused after conv2d, linear"
    assert cells["conv3d"]["x86"] == NONE
    assert cells["conv1d"]["xnnpack_dynamic"].startswith(f"{NONE} (")
    assert cells["matmul"]["x86"].endswith("only when scoped explicitly (not by set_global)")
    assert cells["embedding"]["embedding"].startswith("weight-only, per-row uint8 weights")
    assert cells["embedding"]["xnnpack"] == NONE
    assert cells["view"]["xnnpack"] == "shares its producer's qparams"
    assert "hardswish" not in cells["conv2d"]["xnnpack"]


def test_rows_merge_identical_ops_and_name_overloads_once() -> None:
    markdown = supported_ops_markdown()
    assert "| `embedding`, `embedding_bag` |" in markdown
    assert "relu_" not in markdown and "view_copy" not in markdown
    assert op_name(aten._native_batch_norm_legit_no_training.default) == "batch_norm"
    header = "| op | " + " | ".join(column.title for column in COLUMNS) + " |"
    assert header in markdown.splitlines()


def test_code_limits_name_supported_rows() -> None:
    """A limit noted for an op the column's rules no longer cover would be stale."""
    facts = {column.key: column.facts(column.config()) for column in COLUMNS}
    for key, name in supported_ops._CODE_LIMITS:
        assert facts[key].get(name), f"stale _CODE_LIMITS entry ({key!r}, {name!r})"


# ------------------------------------------------------------------------------- CLI


def test_check_reports_stale_region_and_write_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# t\n\n{BEGIN}\n| old | table |\n{END}\n\nafter\n")
    assert main(["--check", str(readme)]) == 1
    captured = capsys.readouterr()
    assert "-| old | table |" in captured.out
    assert "--write" in captured.err
    assert main(["--write", str(readme)]) == 0
    assert main(["--check", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# t\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert extract_region(text) == supported_ops_markdown()


def test_check_without_markers_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no table here\n")
    assert main(["--check", str(readme)]) == 1
    assert BEGIN in capsys.readouterr().err


def test_module_prints_table() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.supported_ops"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == supported_ops_markdown()


# ------------------------------------------------------- the table tells the truth


def _quantizer(key: str, config):
    if key.startswith("xnnpack"):
        return XNNPACKQuantizer().set_global(config)
    if key.startswith("x86"):
        return X86InductorQuantizer().set_global(config)
    return EmbeddingQuantizer(config)


def _quantized_names(gm: torch.fx.GraphModule) -> set[str]:
    """Names of the ops that carry a quantization spec (claimed-but-float nodes do not)."""
    names = set()
    for node in gm.graph.nodes:
        annotation = get_annotation(node)
        if annotation is None or not isinstance(node.target, torch._ops.OpOverload):
            continue
        specs = [*annotation.input_qspec_map.values(), annotation.output_qspec]
        if any(spec is not None for spec in specs):
            names.add(op_name(node.target))
    return names


_ZOO_MODELS = [
    "tiny_resnet",
    "tiny_mobilenet_v3",
    "efficientnet_block",
    "transformer_encoder_block",
    "conv_transpose_decoder",
    "embedding_bag",
]


@pytest.mark.parametrize("model_name", _ZOO_MODELS)
def test_every_quantized_zoo_op_has_a_cell(model_name: str) -> None:
    model = ZOO[model_name]()
    exported = export_model(model)
    cells = supported_ops_cells()
    for column in COLUMNS:
        prepared = prepare_pt2e(copy.deepcopy(exported), _quantizer(column.key, column.config()))
        for name in _quantized_names(prepared):
            cell = cells.get(name, {}).get(column.key, NONE)
            assert not cell.startswith(NONE), f"{column.title} quantizes {name} in {model_name}"


class _Mixed(nn.Module):
    """Every XNNPACK static op family in one chain::

    x ─ conv2d ─ relu ─ max_pool2d ─ flatten ─ linear ─┬─ mul ─ add ─ cat ─ out
                                                       └──────────────┘
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.linear = nn.Linear(36, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(torch.flatten(nn.functional.max_pool2d(self.conv(x).relu(), 2), 1))
        return torch.cat([y * y + y, y], dim=1)


def test_xnnpack_static_quantizes_what_its_column_claims() -> None:
    exported = export_model(_Mixed(), (torch.randn(1, 3, 8, 8),))
    column = COLUMNS[0]
    prepared = prepare_pt2e(exported, _quantizer(column.key, column.config()))
    claimed = {"conv2d", "relu", "max_pool2d", "flatten", "linear", "mul", "add", "cat"}
    cells = supported_ops_cells()
    assert all(cells[name][column.key] != NONE for name in claimed)
    assert _quantized_names(prepared) == claimed


class _Convs(nn.Module):
    """x1 ─ conv1d ; x2 ─ conv2d: XNNPACK dynamic quantizes only the 2-D one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(3, 4, 3)
        self.conv2d = nn.Conv2d(3, 4, 3)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv1d(x1), self.conv2d(x2)


def test_xnnpack_dynamic_conv_limit_holds() -> None:
    exported = export_model(_Convs(), (torch.randn(1, 3, 8), torch.randn(1, 3, 8, 8)))
    column = next(c for c in COLUMNS if c.key == "xnnpack_dynamic")
    prepared = prepare_pt2e(exported, _quantizer(column.key, column.config()))
    assert _quantized_names(prepared) == {"conv2d"}
    cells = supported_ops_cells()
    assert cells["conv1d"][column.key].startswith(NONE)
    assert not cells["conv2d"][column.key].startswith(NONE)
