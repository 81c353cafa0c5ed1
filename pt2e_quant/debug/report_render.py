"""Rendering a numeric report: an aligned text table, CSV, and a self-contained HTML page.

The renderers take the rows and the worst row and know nothing else about the debugger, so a
new format is one function here. CSV writes full-precision numbers (``repr`` of the float:
``inf`` reads back with ``float()``) and an empty cell for "not measured"; text and HTML round
to two decimals for reading.

The HTML page needs nothing beside it: inline CSS, and the per-layer SQNR plot as a base64 PNG
drawn with matplotlib's Agg canvas in memory (no pyplot, so no global backend is touched).
matplotlib is an optional extra: without it the page says how to get the plot instead.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pt2e_quant.debug.accumulation import Accumulation
    from pt2e_quant.debug.report import ReportRow

__all__ = ["COLUMNS", "render_text", "render_csv", "render_html", "sqnr_plot_png", "summary_line"]

Getter = Callable[["ReportRow"], object]

#: (header, value) per column, shared by every format
COLUMNS: tuple[tuple[str, Getter], ...] = (
    ("#", lambda r: r.index),
    ("op", lambda r: r.op),
    ("module", lambda r: r.module_path),
    ("handle", lambda r: r.handle),
    ("node", lambda r: r.node_name),
    ("activation SQNR (dB)", lambda r: r.activation_sqnr),
    ("input SQNR (dB)", lambda r: r.input_sqnr),
    ("drop (dB)", lambda r: r.drop),
    ("weight SQNR (dB)", lambda r: r.weight_sqnr),
)

_PLOT_MISSING = (
    "The per-layer SQNR plot needs matplotlib, which is not installed "
    "(pip install matplotlib); the table below has the same numbers."
)


def _readable(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else str(value)
    return str(value)


def _exact(value: object) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def summary_line(worst: ReportRow | None) -> str:
    """One sentence naming the worst layer, the first thing a user reads."""
    if worst is None:
        return "No quantized op was measured."
    return (
        f"Worst layer: {worst.label}: {worst.op}, handle {worst.handle}, "
        f"activation SQNR {_readable(worst.activation_sqnr)} dB"
    )


def render_text(
    rows: Sequence[ReportRow], worst: ReportRow | None, accumulation: Accumulation | None = None
) -> str:
    """Columns padded to their widest cell, then where the error accumulates (when given) and
    the worst-layer line."""
    table = [[header for header, _ in COLUMNS]]
    table += [[_readable(get(row)) for _, get in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [accumulation.summary()] if accumulation is not None else []
    return "\n".join([*lines, "", *notes, summary_line(worst)]) + "\n"


def render_csv(rows: Sequence[ReportRow]) -> str:
    """One header line, one line per row; per-channel weight SQNRs ``;``-joined in the last column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([header for header, _ in COLUMNS] + ["weight channel SQNR (dB)"])
    for row in rows:
        channels = row.weight_channel_sqnr
        per_channel = ";".join(map(repr, channels)) if channels else ""
        writer.writerow([_exact(get(row)) for _, get in COLUMNS] + [per_channel])
    return buffer.getvalue()


def sqnr_plot_png(rows: Sequence[ReportRow]) -> bytes | None:
    """Activation and weight SQNR against layer index as PNG bytes; None without matplotlib.

    Infinite values (exact layers) cannot be drawn and are left out of the plot.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    def finite(getter: Getter) -> tuple[list[int], list[float]]:
        points = [(r.index, getter(r)) for r in rows]
        kept = [(i, float(v)) for i, v in points if isinstance(v, float) and math.isfinite(v)]
        return [i for i, _ in kept], [v for _, v in kept]

    figure = Figure(figsize=(min(16.0, max(6.0, 0.12 * len(rows))), 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(*finite(lambda r: r.activation_sqnr), marker="o", label="activation SQNR")
    axes.plot(*finite(lambda r: r.weight_sqnr), "s", label="weight SQNR (worst channel)")
    axes.set_xlabel("layer index (row #)")
    axes.set_ylabel("SQNR (dB)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f0f0f0; }
tr.worst td { background: #fdd; font-weight: bold; }
p.note { color: #666; font-style: italic; }
ol.accumulation { margin-top: 0; }
"""


def _html_table(rows: Sequence[ReportRow], worst: ReportRow | None) -> str:
    head = "".join(f"<th>{html.escape(header)}</th>" for header, _ in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for _, get in COLUMNS:
            value = get(row)
            kind = ' class="num"' if isinstance(value, (int, float)) else ""
            cells.append(f"<td{kind}>{html.escape(_readable(value))}</td>")
        marker = ' class="worst"' if row is worst else ""
        body.append(f"<tr{marker}>{''.join(cells)}</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>"


def _html_accumulation(accumulation: Accumulation | None) -> list[str]:
    """The accumulation sentence and its ranked ops as an ordered list."""
    if accumulation is None:
        return []
    items = "".join(
        f"<li>{html.escape(c.row.label)}: {html.escape(c.row.op)}, loss {c.loss:.2f} dB, "
        f"{c.share:.0%} of the total</li>"
        for c in accumulation.contributions
    )
    listing = [f'<ol class="accumulation">{items}</ol>'] if items else []
    return [f'<p id="accumulation">{html.escape(accumulation.summary())}</p>', *listing]


def render_html(
    rows: Sequence[ReportRow], worst: ReportRow | None, accumulation: Accumulation | None = None
) -> str:
    """The page: heading naming the worst layer, where the error accumulates (when given), the
    plot (or a note), the table."""
    png = sqnr_plot_png(rows)
    if png is None:
        plot = f'<p class="note">{html.escape(_PLOT_MISSING)}</p>'
    else:
        encoded = base64.b64encode(png).decode("ascii")
        plot = f'<img alt="per-layer SQNR" src="data:image/png;base64,{encoded}">'
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>Quantization numeric report</title>',
            f"<style>{_STYLE}</style></head>",
            "<body>",
            "<h1>Quantization numeric report</h1>",
            f'<h2 id="worst">{html.escape(summary_line(worst))}</h2>',
            *_html_accumulation(accumulation),
            plot,
            _html_table(rows, worst),
            "</body>",
            "</html>",
            "",
        ]
    )
