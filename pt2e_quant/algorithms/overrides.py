"""Run any quantizer, then apply the accuracy algorithms' decisions to what it annotated.

The algorithms never edit a quantizer's configuration: a vendor's quantizer has its own
classes and knobs, and ours should not need a new option per algorithm. Instead
:class:`OverridingQuantizer` wraps the user's quantizer and, right after its ``annotate``:

1. reads annotations written with torchao's classes into ours (what prepare would do next
   anyway), so the steps below see one kind of spec whoever wrote them;
2. drops the annotations of every node marked to stay float
   (:func:`~pt2e_quant.contract.annotation.mark_kept_float`: SmoothQuant's scaling multiplies,
   the fallback's chosen ops, or names passed as ``keep_float``), resolving the specs that
   referred to them (:func:`~pt2e_quant.contract.restrict.restrict_annotations`);
3. runs each ``adjustment(gm)`` in order (the range estimators swap observer constructors
   in the remaining specs).

Everything else (``transform_for_annotation``, ``validate``, the observer callback and the
coverage interface ``explain()`` reads) is the wrapped quantizer's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import kept_float_reason, mark_kept_float
from pt2e_quant.contract.foreign import translate_annotations
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.restrict import restrict_annotations
from pt2e_quant.errors import AnnotationError
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.pipeline.quantizer_calls import call_quantizer, name_the_quantizer

__all__ = ["Adjustment", "OverridingQuantizer", "KEPT_FOR_TARGET"]

#: ``adjustment(gm)``: edits the (already translated) annotations of one graph in place
Adjustment = Callable[[GraphModule], None]

#: the reason explain() gives for the ops the accuracy-aware fallback keeps float
KEPT_FOR_TARGET = "kept float to meet the accuracy target"

_API = "prepare_pt2e"


class OverridingQuantizer(Quantizer):
    """``quantizer``'s annotations, minus the kept-float nodes, after ``adjustments``.

    ``keep_float`` maps node names to the reason each stays float (explain() reports it).
    """

    def __init__(
        self,
        quantizer: Any,
        *,
        keep_float: Mapping[str, str] | None = None,
        adjustments: Sequence[Adjustment] = (),
    ) -> None:
        self.quantizer = quantizer
        self.keep_float = dict(keep_float or {})
        self.adjustments = tuple(adjustments)
        self.notes: list[str] = []

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        return call_quantizer(self.quantizer, "transform_for_annotation", _API, model)

    def annotate(self, model: GraphModule) -> GraphModule:
        model = call_quantizer(self.quantizer, "annotate", _API, model)
        for gm in iter_graph_modules(model):
            try:
                translate_annotations(gm, self.quantizer)
            except AnnotationError as error:
                name_the_quantizer(error, self.quantizer)
                raise
            self._drop_kept_float(gm)
            for adjustment in self.adjustments:
                adjustment(gm)
        return model

    def _drop_kept_float(self, gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.name in self.keep_float:
                mark_kept_float(node, self.keep_float[node.name])
        keep: list[Node] = [n for n in gm.graph.nodes if kept_float_reason(n) is None]
        if len(keep) < len(gm.graph.nodes):
            self.notes.extend(restrict_annotations(gm, keep))

    def validate(self, model: GraphModule) -> None:
        call_quantizer(self.quantizer, "validate", _API, model)

    def prepare_obs_or_fq_callback(self, model: GraphModule, edge_or_node_to_obs_or_fq) -> None:
        call_quantizer(
            self.quantizer, "prepare_obs_or_fq_callback", _API, model, edge_or_node_to_obs_or_fq
        )

    # -- coverage: explain() reads the wrapped quantizer's rules, scoping and name -----------

    @property
    def coverage_name(self) -> str | None:  # type: ignore[override]
        return getattr(self.quantizer, "coverage_name", None) or type(self.quantizer).__name__

    def leaf_quantizers(self) -> list[Any]:
        method = getattr(self.quantizer, "leaf_quantizers", None)
        return list(method()) if callable(method) else [self.quantizer]
