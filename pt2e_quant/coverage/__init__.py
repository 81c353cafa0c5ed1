"""Coverage diagnostics: which compute ops were quantized, why the others were not, and what
the backend (XNNPACK delegation, Inductor int8 fusion) will do with each.

    report = explain(converted, quantizer)
    print(report)            # the table, the summary line, warnings
    report.summary()         # "12 compute ops: 10 quantized, 2 float (1 no rule, ...)"
"""

from pt2e_quant.coverage.explain import explain
from pt2e_quant.coverage.report import CoverageReport, CoverageRow

__all__ = ["explain", "CoverageReport", "CoverageRow"]
