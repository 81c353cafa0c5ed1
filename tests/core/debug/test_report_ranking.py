"""NumericReport's ranking helpers on hand-made rows: what "first jump" and "worst" mean.

``first_jump()`` is the row a user is told to look at first; its default threshold (10 dB,
"loses more than") decides whether a mild 5 dB loss is flagged. Rows are built by hand so
the expected answer is obvious from the numbers.
"""

from __future__ import annotations

from pt2e_quant.debug import NumericReport, ReportRow


def _row(index: int, activation: float | None, drop: float | None) -> ReportRow:
    return ReportRow(
        index=index,
        op="linear",
        module_path=f"layers.{index}",
        handle=index + 1,
        node_name=f"linear_{index}",
        activation_sqnr=activation,
        input_sqnr=None if drop is None else activation + drop,
        drop=drop,
    )


def test_first_jump_default_threshold_is_more_than_ten_db() -> None:
    rows = (_row(0, 40.0, 5.0), _row(1, 30.0, 10.0), _row(2, 15.0, 15.0), _row(3, 5.0, 10.5))
    report = NumericReport(rows=rows)

    assert report.first_jump() is rows[2]
    assert report.first_jump(threshold_db=4.0) is rows[0]
    assert report.first_jump(threshold_db=20.0) is None


def test_worst_skips_unmeasured_rows_and_orders_worst_first() -> None:
    rows = (_row(0, 25.0, None), _row(1, None, None), _row(2, 8.0, 17.0), _row(3, 12.0, None))
    report = NumericReport(rows=rows)

    assert report.worst(2) == [rows[2], rows[3]]
    assert report.worst(10) == [rows[2], rows[3], rows[0]]
