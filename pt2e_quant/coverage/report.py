"""``CoverageReport``: one row per compute op, the counts, a one-line summary and a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pt2e_quant.contract.backends import Backend, installed_backends
from pt2e_quant.coverage.reasons import reason_kind
from pt2e_quant.coverage.table import render_table

__all__ = ["CoverageRow", "CoverageReport"]


@dataclass(frozen=True)
class CoverageRow:
    """One compute op. ``reason`` says why it is float, or "fused into <op>" for an op covered
    by its producer's pattern; ``prediction`` is the backend's expected treatment."""

    node: str
    op: str
    module: str
    quantized: bool
    reason: str | None = None
    prediction: str | None = None
    scheme: str | None = None  # "act int8 per-token (dynamic), weight int4 per-group (32)"


@dataclass
class CoverageReport:
    rows: list[CoverageRow]
    backend: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """``compute``, ``quantized``, ``float``, one entry per float reason kind (``"no
        rule"``, ...) and, with a backend, per prediction (``"xnnpack int8"``, ...)."""
        quantized = sum(row.quantized for row in self.rows)
        counts = {"compute": len(self.rows), "quantized": quantized}
        counts["float"] = len(self.rows) - quantized
        kinds = Counter(reason_kind(r.reason) for r in self.rows if not r.quantized and r.reason)
        counts.update(sorted(kinds.items(), key=lambda item: (-item[1], item[0])))
        predictions = Counter(_prediction_kind(r.prediction) for r in self.rows if r.prediction)
        counts.update(sorted(predictions.items()))
        return counts

    def summary(self) -> str:
        """E.g. ``"12 compute ops: 9 quantized, 3 float (2 no rule, 1 input not quantized);
        XNNPACK will delegate 9 as int8, 2 in fp32"``."""
        counts = self.counts
        text = f"{counts['compute']} compute ops: {counts['quantized']} quantized, "
        text += f"{counts['float']} float"
        kinds = Counter(reason_kind(r.reason) for r in self.rows if not r.quantized and r.reason)
        if kinds:
            ordered = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
            text += " (" + ", ".join(f"{n} {kind}" for kind, n in ordered) + ")"
        backend = self._backend()
        if backend is not None and backend.summarize is not None:
            text += backend.summarize(counts)
        return text

    def _backend(self) -> Backend | None:
        return installed_backends().get(self.backend) if self.backend is not None else None

    def to_text(self) -> str:
        """The table, then the summary line and any warnings."""
        header = ["node", "op", "module", "quantized", "reason"]
        with_prediction = any(row.prediction for row in self.rows)
        if with_prediction:
            backend = self._backend()
            header.append(f"{backend.title if backend is not None else 'backend'} prediction")
        with_scheme = any(row.scheme for row in self.rows)
        if with_scheme:
            header.append("scheme")
        body = []
        for row in self.rows:
            cells = [row.node, row.op, row.module, "yes" if row.quantized else "no", row.reason]
            cells += [row.prediction] if with_prediction else []
            body.append(cells + ([row.scheme] if with_scheme else []))
        lines = [render_table(header, body), "", self.summary()]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _prediction_kind(prediction: str) -> str:
    if prediction.startswith("fused into"):
        return "fused post-op"
    return prediction.replace(" (fused)", "")
