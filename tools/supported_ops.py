"""The supported-ops table of every backend, generated from the rule tables.

README's "Supported ops" section is the output of :func:`supported_ops_markdown`, written by
``python -m tools.supported_ops --write README.md`` and compared by a test, so the table
cannot keep promising an op whose rule is gone, nor miss a new one.

Each cell is derived from the data the quantizers run on: which ops anchor a rule
(``xnnpack_rules.RULES``, ``x86_inductor_rules.FUSION_RULES`` and the x86 op sets,
``embedding.EMBEDDING_OPS``), what each rule fuses after its anchor, which ops share their
producer's qparams, and the dtypes / granularity of the column's preset config. Rows are
aten ops named by their overload packet (``relu_`` and ``view_copy`` read as ``relu`` and
``view``); rows whose cells agree in every column are merged. For example::

    | op                    | XNNPACK static                                   | ...
    | `conv_transpose1d/3d` | int8, per-channel int8 weights; fuses relu; ...  | ...

A few limits are checked by the annotators in code, not stated in any table (a dynamic conv
must be 2-D, a transposed conv ungrouped); :data:`_CODE_LIMITS` adds them as notes, and the
test checks that each still names a row its column otherwise supports.
"""

from __future__ import annotations

import argparse
import difflib
import operator
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from pt2e_quant.graph.patterns import Rule
from pt2e_quant.ops.families import (
    BATCH_NORM_OPS,
    CAT_OPS,
    CONV_OPS,
    CONV_TRANSPOSE_OPS,
    LINEAR_OPS,
)
from quantizers.config import QuantizationConfig
from quantizers.embedding import quantizer as embedding
from quantizers.embedding.quantizer import get_embedding_quantization_config
from quantizers.x86_inductor import rules as x86_inductor_rules
from quantizers.x86_inductor.quantizer import get_default_x86_inductor_quantization_config
from quantizers.xnnpack import rules as xnnpack_rules
from quantizers.xnnpack.quantizer import get_symmetric_quantization_config

__all__ = [
    "BEGIN",
    "END",
    "COLUMNS",
    "Column",
    "extract_region",
    "main",
    "op_name",
    "replace_region",
    "supported_ops_cells",
    "supported_ops_markdown",
    "supported_ops_rows",
]

BEGIN = "<!-- supported-ops:begin -->"
END = "<!-- supported-ops:end -->"
NONE = "—"

#: human name -> what the column does with it, facts in the order they were found
Facts = dict[str, list[str]]

# --------------------------------------------------------------------------- op names

#: internal spellings of one user-facing op (decompositions, ``concat``)
_ALIASES = {
    "native_batch_norm_legit": "batch_norm",
    "native_batch_norm_legit_no_training": "batch_norm",
    "concat": "cat",
}


def op_name(op: torch._ops.OpOverload) -> str:
    """The name users know an aten overload by: ``aten.relu_.default`` -> ``relu``,
    ``aten.view_copy.default`` -> ``view``, ``aten._embedding_bag.default`` -> ``embedding_bag``."""
    name = op.overloadpacket.__name__.strip("_")
    name = re.sub(r"_(copy|forward_only)$", "", name)
    return _ALIASES.get(name, name)


def _names(ops: Iterable) -> list[str]:
    """Distinct human names of ``ops``, sorted."""
    return sorted({op_name(op) for op in ops})


def _compress(names: Iterable[str]) -> list[str]:
    """``conv1d, conv2d, conv3d`` -> ``conv1d/2d/3d``; other names unchanged, order kept."""
    groups: dict[str, list[str]] = {}
    for name in names:
        match = re.fullmatch(r"(.+?)([1-3]d)", name)
        prefix, dim = (match.group(1), match.group(2)) if match else (name, "")
        groups.setdefault(prefix, [])
        if dim not in groups[prefix]:
            groups[prefix].append(dim)
    return [prefix + "/".join(sorted(dims)) for prefix, dims in groups.items()]


def _ordered(ops: Iterable) -> list:
    """A frozenset of overloads in a stable order (by name), so the text is reproducible."""
    return sorted(ops, key=lambda op: (op_name(op), str(op)))


def _add(facts: Facts, ops: Iterable, fact: str) -> None:
    for op in _ordered(ops):
        found = facts.setdefault(op_name(op), [])
        if fact not in found:
            found.append(fact)


# ---------------------------------------------------------------------- spec wording

_GRANULARITY = {
    torch.per_tensor_affine: "per-tensor",
    torch.per_tensor_symmetric: "per-tensor",
    torch.per_channel_affine: "per-channel",
    torch.per_channel_symmetric: "per-channel",
    torch.per_channel_affine_float_qparams: "per-row",
}


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _activation(config: QuantizationConfig) -> str:
    spec = config.input_activation
    if spec is None:
        return "weight-only"
    return ("dynamic " if spec.is_dynamic else "") + _dtype(spec.dtype)


def _weights(config: QuantizationConfig) -> str:
    spec = config.weight
    granularity = _GRANULARITY.get(spec.qscheme, str(spec.qscheme))
    suffix = " (float qparams)" if spec.qscheme == torch.per_channel_affine_float_qparams else ""
    return f"{granularity} {_dtype(spec.dtype)} weights{suffix}"


def _fuses(chains: list[tuple[str, ...]]) -> str:
    """What follows the anchor in a pattern, e.g. ``fuses add(+relu) or relu/silu``.

    ``chains`` holds one tuple of post-op names per rule; ``()`` is the lone anchor. Batch
    norm is listed apart: prepare_pt2e folds it into the conv / linear, so a pattern through
    it only matches under QAT. A chain that is a prefix of a longer one is shown as the
    optional tail of that one (``add`` and ``add -> relu`` read ``add(+relu)``).
    """
    bn = op_name(next(iter(BATCH_NORM_OPS)))
    qat = any(bn in chain for chain in chains)
    plain = list(dict.fromkeys(tuple(p for p in c if p != bn) for c in chains if c))
    plain = [c for c in plain if c]
    longest = [c for c in plain if not any(o != c and o[: len(c)] == c for o in plain)]
    shown = []
    for chain in longest:
        cut = next(k for k in range(1, len(chain) + 1) if chain[:k] in plain)
        tail = f"(+{'+'.join(chain[cut:])})" if chain[cut:] else ""
        shown.append("+".join(chain[:cut]) + tail)
    parts = [f"fuses {' or '.join(shown)}"] if shown else []
    if qat:
        parts.append(f"under QAT also {bn}")
    return "; ".join(parts)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _fused_after(op: object, anchors: list[str]) -> str:
    """The cell of an op that is quantized only inside its anchors' patterns."""
    qat = " under QAT" if op in BATCH_NORM_OPS else ""
    return f"fused after {', '.join(_compress(dict.fromkeys(anchors)))}{qat}"


def _post_ops(rule: Rule) -> list[tuple[frozenset, ...]]:
    """What follows the anchor of ``rule``'s pattern, one tuple of op sets per path up to its
    root (``(batch_norm, relu)``); the getitem that reads a batch norm's tuple is not an op
    of its own."""
    paths = (
        tuple(step.targets for step in path[1:] if operator.getitem not in step.targets)
        for path in rule.paths
    )
    return list(dict.fromkeys(paths))


def _collect_chains(
    rule: Rule, chains: dict[object, list[tuple[str, ...]]], fused_after: dict[object, list[str]]
) -> None:
    """Add ``rule``'s chains to its anchors' entries and its anchors to its post-ops'."""
    for post_ops in _post_ops(rule):
        chain = tuple("/".join(_names(ops)) for ops in post_ops)
        for op in _ordered(rule.targets):
            chains.setdefault(op, []).append(chain)
        for ops in post_ops:
            for op in _ordered(ops):
                fused_after.setdefault(op, []).extend(_names(rule.targets))


# ----------------------------------------------------------------------- XNNPACK


def _xnnpack_anchor(op: object, config: QuantizationConfig) -> str:
    """What the annotator of an anchor op quantizes, by the op's family."""
    act = _activation(config)
    if op in CONV_OPS | CONV_TRANSPOSE_OPS | LINEAR_OPS:
        return f"{act}, {_weights(config)}"
    if op in CAT_OPS:
        return f"{act}, inputs and output share qparams"
    if op in xnnpack_rules.SHARED_QPARAM_OPS:
        return f"{act}, output shares the input's qparams"
    return act


def _xnnpack_facts(config: QuantizationConfig) -> Facts:
    """``RULES`` in table order (dynamic configs run only the ``dynamic`` rules), then the
    ops fused into them, then qparam sharing (which needs a producer with output qparams,
    so a dynamic config, without output spec, shares nothing)."""
    rules = [r for r in xnnpack_rules.RULES if r.dynamic or not config.is_dynamic]
    chains: dict[object, list[tuple[str, ...]]] = {}
    fused_after: dict[object, list[str]] = {}
    for rule in rules:
        _collect_chains(rule, chains, fused_after)
    facts: Facts = {}
    for op, op_chains in chains.items():
        _add(facts, [op], _join(_xnnpack_anchor(op, config), _fuses(op_chains)))
    for op, anchors in fused_after.items():
        _add(facts, [op], _fused_after(op, anchors))
    if config.output_activation is not None:
        _add(
            facts, xnnpack_rules.SHARED_QPARAM_OPS - chains.keys(), "shares its producer's qparams"
        )
    return facts


# --------------------------------------------------------------------------- X86


def _x86_facts(config: QuantizationConfig) -> Facts:
    """``FUSION_RULES`` in table order, their post-ops, then the steps the quantizer runs
    after them: matmul, mul and int8-in-int8-out propagation (see ``X86InductorQuantizer``)."""
    rules = x86_inductor_rules
    chains: dict[object, list[tuple[str, ...]]] = {}
    fused_after: dict[object, list[str]] = {}
    for rule in rules.FUSION_RULES:
        _collect_chains(rule, chains, fused_after)
    act = _activation(config)
    facts: Facts = {}
    for op, op_chains in chains.items():
        _add(facts, [op], _join(f"{act}, {_weights(config)}", _fuses(op_chains)))
    for op, anchors in fused_after.items():
        _add(facts, [op], _fused_after(op, anchors))
    _add(facts, rules.MATMUL_OPS, f"{act} inputs, only when scoped explicitly (not by set_global)")
    _add(facts, rules.X86_MUL_OPS, f"{act} inputs of the same shape")
    _add(
        facts, rules.INT8_IN_INT8_OUT_OPS, f"stays {act} after quantized producers (shares qparams)"
    )
    return facts


# --------------------------------------------------------------------- Embedding


def _embedding_facts(config: QuantizationConfig) -> Facts:
    facts: Facts = {}
    _add(facts, embedding.EMBEDDING_OPS, f"{_activation(config)}, {_weights(config)}")
    return facts


# ----------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One backend preset: its heading, the call that builds its config, and its rules."""

    key: str
    title: str
    preset: str
    config: Callable[[], QuantizationConfig]
    facts: Callable[[QuantizationConfig], Facts]


COLUMNS: tuple[Column, ...] = (
    Column(
        "xnnpack",
        "XNNPACK static",
        "get_symmetric_quantization_config(is_per_channel=True)",
        lambda: get_symmetric_quantization_config(is_per_channel=True),
        _xnnpack_facts,
    ),
    Column(
        "xnnpack_dynamic",
        "XNNPACK dynamic",
        "get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)",
        lambda: get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True),
        _xnnpack_facts,
    ),
    Column(
        "x86",
        "X86 static",
        "get_default_x86_inductor_quantization_config()",
        get_default_x86_inductor_quantization_config,
        _x86_facts,
    ),
    Column(
        "x86_dynamic",
        "X86 dynamic",
        "get_default_x86_inductor_quantization_config(is_dynamic=True)",
        lambda: get_default_x86_inductor_quantization_config(is_dynamic=True),
        _x86_facts,
    ),
    Column(
        "embedding",
        "Embedding",
        "get_embedding_quantization_config()",
        get_embedding_quantization_config,
        _embedding_facts,
    ),
)

#: Limits an annotator checks in code (shapes, arguments, scoping), which no table states:
#: (column key, op name) -> (still quantized?, why). Stale entries fail the table's test.
_CODE_LIMITS: dict[tuple[str, str], tuple[bool, str]] = {
    ("xnnpack", "conv_transpose1d"): (True, "groups=1 only"),
    ("xnnpack", "conv_transpose2d"): (True, "groups=1 only"),
    ("xnnpack", "conv_transpose3d"): (True, "groups=1 only"),
    ("xnnpack", "add"): (True, "float32 operands only"),
    ("xnnpack", "mul"): (True, "float32 operands only"),
    ("xnnpack_dynamic", "conv1d"): (False, "dynamic conv is 2-D only"),
    ("xnnpack_dynamic", "conv2d"): (True, "not depthwise, not followed by relu"),
    ("xnnpack_dynamic", "conv3d"): (False, "dynamic conv is 2-D only"),
    ("xnnpack_dynamic", "conv_transpose1d"): (False, "dynamic conv is 2-D only"),
    ("xnnpack_dynamic", "conv_transpose2d"): (True, "groups=1 only"),
    ("xnnpack_dynamic", "conv_transpose3d"): (False, "dynamic conv is 2-D only"),
    ("x86", "flatten"): (True, "only when a user is quantized"),
    ("x86_dynamic", "flatten"): (True, "only when a user is quantized"),
}


def _cell(key: str, name: str, facts: Facts) -> str:
    found = facts.get(name)
    limit = _CODE_LIMITS.get((key, name))
    if not found:
        return NONE
    if limit is None:
        return "; ".join(found)
    quantized, why = limit
    return _join(*found, why) if quantized else f"{NONE} ({why})"


def supported_ops_cells() -> dict[str, dict[str, str]]:
    """op name -> column key -> cell, for every op some column quantizes (first-seen order)."""
    per_column = [(column.key, column.facts(column.config())) for column in COLUMNS]
    names: dict[str, None] = {}
    for _, facts in per_column:
        names.update(dict.fromkeys(facts))
    return {name: {key: _cell(key, name, facts) for key, facts in per_column} for name in names}


def supported_ops_rows() -> list[tuple[str, tuple[str, ...]]]:
    """(row label, one cell per column of :data:`COLUMNS`), rows merged when all cells agree."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for name, cells in supported_ops_cells().items():
        merged.setdefault(tuple(cells[c.key] for c in COLUMNS), []).append(name)
    return [
        (", ".join(f"`{label}`" for label in _compress(group)), cells)
        for cells, group in merged.items()
    ]


_LEGEND = (
    "Generated from the rule tables (`quantizers/xnnpack/rules.py`, "
    "`quantizers/x86_inductor/rules.py`, `quantizers/embedding/quantizer.py`) by "
    "`python -m tools.supported_ops --write README.md`; "
    "`tests/tools/test_supported_ops_table.py` fails when this section is stale. "
    "Each column is one preset config: {presets}. {none} means left float. "
    '"fuses a(+b)": the op and a following `a` (then optionally `b`) are quantized as one '
    "pattern. Batch norm only remains to be fused under QAT: `prepare_pt2e` folds it first. "
    "Ops not listed are left float by every backend."
)


def supported_ops_markdown() -> str:
    """The README's supported-ops section (between the markers), ending with a newline."""
    presets = "; ".join(f"{c.title} `{c.preset}`" for c in COLUMNS)
    legend = _LEGEND.format(presets=presets, none=NONE)
    lines = [textwrap.fill(legend, width=100, break_long_words=False, break_on_hyphens=False), ""]
    lines.append("| op | " + " | ".join(c.title for c in COLUMNS) + " |")
    lines.append("|---" * (len(COLUMNS) + 1) + "|")
    for label, cells in supported_ops_rows():
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ README


def _bounds(text: str) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(
            f"the markers {BEGIN} and {END} were not found (in that order); add them where "
            "the supported-ops table belongs"
        )
    return start + len(BEGIN), end


def extract_region(text: str) -> str:
    """The text between the markers, without the newline that follows the begin marker."""
    start, end = _bounds(text)
    return text[start:end].removeprefix("\n")


def replace_region(text: str, markdown: str) -> str:
    """``text`` with the region between the markers replaced by ``markdown``."""
    start, end = _bounds(text)
    return text[:start] + "\n" + markdown + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Print the table; ``--check FILE`` exits 1 with a diff when FILE's region is stale,
    ``--write FILE`` regenerates it."""
    parser = argparse.ArgumentParser(prog="python -m tools.supported_ops", description=main.__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", metavar="FILE", type=Path)
    group.add_argument("--write", metavar="FILE", type=Path)
    args = parser.parse_args(argv)
    markdown = supported_ops_markdown()
    path = args.check or args.write
    if path is None:
        print(markdown, end="")
        return 0
    try:
        text = path.read_text()
        current = extract_region(text)
    except (OSError, ValueError) as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    if args.write:
        if current != markdown:
            path.write_text(replace_region(text, markdown))
        return 0
    if current == markdown:
        return 0
    diff = difflib.unified_diff(
        current.splitlines(keepends=True),
        markdown.splitlines(keepends=True),
        f"{path} (supported-ops region)",
        "generated",
    )
    sys.stdout.writelines(diff)
    print(
        f"{path}: the supported-ops table is stale; regenerate it with "
        f"python -m tools.supported_ops --write {path}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
