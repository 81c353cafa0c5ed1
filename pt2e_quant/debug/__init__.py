"""The PT2E numeric debugger: find which op of a quantized model loses accuracy.

Every node of the exported program gets a stable integer *debug handle*; quantization keeps the
handle on the op and on the dequantize of its quantized output, so a float and a quantized
model can be run side by side and compared op by op. Typical flow::

    ep = torch.export.export(model, example_inputs)
    generate_numeric_debug_handle(ep)            # before .module(): both sides inherit handles
    float_gm = ep.module()
    ref = prepare_for_propagation_comparison(float_gm)

    quantized = convert_pt2e(calibrate(prepare_pt2e(float_gm, quantizer)))
    actual = prepare_for_propagation_comparison(quantized)

    ref(*example_inputs); actual(*example_inputs)
    summary = compare_results(
        extract_results_from_loggers(ref), extract_results_from_loggers(actual)
    )
    worst = min(summary.values(), key=lambda s: s.results[0].sqnr)

Beyond the seed API: :func:`extract_weights` compares float and dequantized weights,
:func:`numeric_report` puts activations and weights in one per-layer table (text, CSV, HTML
with a plot; ``report.accumulation()`` ranks the ops by the SQNR they lose, for a gradual
decay), and :func:`sensitivity` quantizes one layer at a time to rank the layers by the
damage they do.

This module only re-exports; see :mod:`.handles`, :mod:`.loggers`, :mod:`.comparison`,
:mod:`.weights`, :mod:`.report`, :mod:`.accumulation` and :mod:`.sensitivity`.
"""

from pt2e_quant.debug.accumulation import Accumulation, LossContribution
from pt2e_quant.debug.comparison import (
    NodeAccuracySummary,
    QuantizationComparisonResult,
    compare_results,
    compute_cosine_similarity,
    compute_mse,
    compute_normalized_l2,
    compute_sqnr,
    module_path,
)
from pt2e_quant.debug.handles import (
    CUSTOM_KEY,
    NUMERIC_DEBUG_HANDLE_KEY,
    bfs_trace_with_node_process,
    generate_numeric_debug_handle,
)
from pt2e_quant.debug.loggers import (
    OutputLogger,
    extract_results_from_loggers,
    prepare_for_propagation_comparison,
)
from pt2e_quant.debug.report import (
    MissingDebugHandlesError,
    NumericReport,
    ReportRow,
    numeric_report,
)
from pt2e_quant.debug.sensitivity import LayerSensitivity, SensitivityRanking, sensitivity
from pt2e_quant.debug.weights import WeightComparison, extract_weights

__all__ = [
    "CUSTOM_KEY",
    "NUMERIC_DEBUG_HANDLE_KEY",
    "generate_numeric_debug_handle",
    "bfs_trace_with_node_process",
    "OutputLogger",
    "prepare_for_propagation_comparison",
    "extract_results_from_loggers",
    "compute_sqnr",
    "compute_mse",
    "compute_normalized_l2",
    "compute_cosine_similarity",
    "QuantizationComparisonResult",
    "NodeAccuracySummary",
    "compare_results",
    "module_path",
    "WeightComparison",
    "extract_weights",
    "numeric_report",
    "NumericReport",
    "ReportRow",
    "Accumulation",
    "LossContribution",
    "MissingDebugHandlesError",
    "sensitivity",
    "SensitivityRanking",
    "LayerSensitivity",
]
