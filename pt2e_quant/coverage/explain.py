"""``explain(model, quantizer)``: the coverage report of a prepared or converted model.

Walks the top graph and every higher-order-op body (graph order, bodies after the node that
calls them), keeps the compute ops (:mod:`~pt2e_quant.coverage.classify`), decides for each
whether it was quantized (:mod:`~pt2e_quant.coverage.evidence`), why not
(:mod:`~pt2e_quant.coverage.reasons`), and what the backend will do with it
(:mod:`~quantizers.xnnpack.delegation`, :mod:`~quantizers.x86_inductor.inductor_fusion`).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.fx import GraphModule, Node

from pt2e_quant.contract.backends import Backend, backend_for, get_backend
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.coverage.classify import is_compute_op
from pt2e_quant.coverage.evidence import graph_has_annotations, status_of
from pt2e_quant.coverage.reasons import float_reason
from pt2e_quant.coverage.report import CoverageReport, CoverageRow
from pt2e_quant.coverage.scheme import describe_scheme
from pt2e_quant.debug.comparison import module_path, op_name
from pt2e_quant.graph.control_flow import real_op_for
from pt2e_quant.graph.subgraphs import iter_graph_modules, subgraph_args

__all__ = ["explain"]


def _body_kind(target: object) -> str:
    """``torch.ops.higher_order.cond`` (or its eager stand-in in a prepared model) -> "cond"."""
    target = real_op_for(target) or target
    name = getattr(target, "_name", None) or getattr(target, "__name__", str(target))
    return name.removesuffix("_impl")


def _walk(
    gm: GraphModule, prefix: str = "", kind: str | None = None
) -> Iterator[tuple[Node, str, str | None]]:
    """(node, display name, enclosing higher-order op kind) for every node, bodies included."""
    for node in gm.graph.nodes:
        yield node, prefix + node.name, kind
        for attr, body in subgraph_args(gm, node):
            yield from _walk(body, f"{prefix}{attr}.", _body_kind(node.target))


def explain(
    model: GraphModule, quantizer: Quantizer | None = None, *, backend: str | None = None
) -> CoverageReport:
    """Report, for every compute op of ``model``, whether it was quantized and if not, why.

    ``model`` is a converted (or prepared) GraphModule from our pipeline. ``quantizer``, the
    one used to prepare it, lets the report name the reason for each float op. ``backend``
    (an installed backend's name, ``"xnnpack"`` or ``"x86"`` here; inferred from the
    quantizer's type when omitted) adds the backend's prediction: XNNPACK delegation per op,
    or the int8 kernels Inductor will fuse (with a warning when
    ``torch._inductor.config.freezing`` is off).
    """
    chosen = _chosen_backend(backend, quantizer)
    annotated = any(graph_has_annotations(gm) for gm in iter_graph_modules(model))
    rows = []
    for node, name, kind in _walk(model):
        if not is_compute_op(node):
            continue
        status = status_of(node, annotated)
        reason = None
        if status.fused_into is not None:
            reason = f"fused into {status.fused_into.name}"
            if not status.quantized:
                reason = float_reason(status.fused_into, quantizer, kind)
        elif not status.quantized:
            reason = float_reason(node, quantizer, kind)
        prediction = None
        if chosen is not None and chosen.predict is not None:
            prediction = chosen.predict(node, status)
        rows.append(
            CoverageRow(
                name,
                op_name(node),
                module_path(node.meta.get("nn_module_stack")),
                status.quantized,
                reason,
                prediction,
                describe_scheme(node) if status.quantized else None,
            )
        )
    warnings = chosen.warnings() if chosen is not None else []
    return CoverageReport(rows, chosen.name if chosen is not None else None, warnings)


def _chosen_backend(name: str | None, quantizer: Quantizer | None) -> Backend | None:
    if name is None:
        return backend_for(quantizer)
    try:
        return get_backend(name)
    except ValueError as error:
        raise ValueError(f"explain: {error} (or None)") from None
