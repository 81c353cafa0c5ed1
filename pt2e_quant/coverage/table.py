"""Rendering coverage rows as a fixed-width text table (no third-party table library)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]

_MAX_WIDTH = 60  # a longer cell (a long reason) is cut with an ellipsis


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_WIDTH else text[: _MAX_WIDTH - 1] + "…"


def render_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``header`` and ``rows`` as left-aligned columns separated by two spaces."""
    cells = [[_cell(v) for v in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
