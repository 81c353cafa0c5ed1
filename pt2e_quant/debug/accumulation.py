"""Where a gradual SQNR decay comes from: each op's loss, ranked, with its share of the total.

:meth:`~pt2e_quant.debug.report.NumericReport.first_jump` names the first op that loses more
than a threshold at once. A deep model often loses its accuracy differently: SQNR falls from
about 26 to 6 dB over dozens of ops, none losing more than 2 dB, and ``first_jump()`` is None.
:func:`accumulate` answers "where does it go?" for that case::

    loss(op)  = max(0, worst input SQNR - activation SQNR)      # dB this op lost itself
    total     = sum of loss(op) over the counted ops
    share(op) = loss(op) / total

* **worst input SQNR**: the lowest SQNR among the op's data inputs as the op reads them
  (``ReportRow.inputs_sqnr``; its first entry is the table's input SQNR). For a single-input
  op the loss is the table's ``drop``. For an add or cat, comparing with the worst input keeps
  the op from being charged for error one input already carried (a residual add reading a
  noisy skip connection loses only what the add itself adds).
* **gains count as zero**: an op whose output is cleaner than its worst input (adding a clean
  residual, ``1 + tanh(x)``) lost nothing, and one op's gain does not cancel another's loss.
* **not counted**: ops without a measured activation SQNR, and ops whose inputs are all exact
  (+inf, an unquantized graph input) or unmeasured: all their error starts there and has no
  finite size in dB; :meth:`~pt2e_quant.debug.report.NumericReport.worst` ranks them.
* **not attributed**: loss in ops that have no row (float ops between quantized ones, such as
  a layer norm left float, and the requantization of their output) shows as an op's input
  SQNR below its producer's activation SQNR, and is in no op's loss.

Along a chain of single-input ops the losses add up to the whole decay (first input SQNR minus
last activation SQNR, gains aside); where branches run in parallel (attention's query, key and
value) each branch's losses count, so the sum can exceed the end-to-end decay. A few large
shares point at the ops to keep in float or to quantize more finely; evenly spread shares mean
the decay is the depth itself.

Worked example, three linears in a chain (input SQNR -> activation SQNR)::

    fc1  40 -> 37   loss 3   share 3/10 = 30 %
    fc2  37 -> 31   loss 6   share 60 %
    fc3  31 -> 30   loss 1   share 10 %         total 10 dB: fc2 first
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pt2e_quant.debug.report import ReportRow

__all__ = ["Accumulation", "LossContribution", "accumulate", "op_loss"]


@dataclass(frozen=True)
class LossContribution:
    """One op's loss in dB and its share (0..1) of the total loss."""

    row: ReportRow
    loss: float
    share: float


@dataclass(frozen=True)
class Accumulation:
    """The ``top`` ops by loss, largest first, with the total over all ``counted`` ops."""

    contributions: tuple[LossContribution, ...]
    total: float
    counted: int

    def summary(self) -> str:
        """One sentence: how much was lost over how many ops, and where most of it went."""
        if self.counted == 0:
            return "Error accumulation: no op with a finite input and output SQNR was measured."
        if self.total <= 0 or not self.contributions:
            return f"Error accumulation: none of the {self.counted} measured ops lost SQNR."
        listed = ", ".join(
            f"{c.row.label} {c.loss:.2f} dB ({c.share:.0%})" for c in self.contributions
        )
        return (
            f"Error accumulates over {self.counted} ops (per-op losses sum to "
            f"{self.total:.2f} dB); largest shares: {listed}"
        )

    def __str__(self) -> str:
        return self.summary()


def op_loss(row: ReportRow) -> float | None:
    """``max(0, worst input SQNR - activation SQNR)``; None when not counted (module
    docstring)."""
    if row.activation_sqnr is None or not math.isfinite(row.activation_sqnr):
        return None
    inputs = [v for v in row.inputs_sqnr if v is not None and math.isfinite(v)]
    if not inputs:
        return None
    return max(0.0, min(inputs) - row.activation_sqnr)


def accumulate(rows: Sequence[ReportRow], top: int = 5) -> Accumulation:
    """Rank ``rows`` by :func:`op_loss`; ties keep graph order. ``top`` must be positive."""
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise ValueError(f"accumulation: top must be a positive int, got {top!r}")
    losses = [(row, loss) for row in rows if (loss := op_loss(row)) is not None]
    total = sum(loss for _, loss in losses)
    ranked = sorted((item for item in losses if item[1] > 0), key=lambda item: -item[1])
    contributions = tuple(LossContribution(row, loss, loss / total) for row, loss in ranked[:top])
    return Accumulation(contributions, total, len(losses))
