"""Claim the ops of already quantized regions so the quantizer leaves them alone.

Runs just before ``quantizer.annotate``. Every op of a region found by
:func:`pt2e_quant.graph.quantized_regions.find_quantized_regions` gets an empty annotation marked
``_annotated`` (replacing any it had), the mark by which torchao-style annotators (and ours)
skip a node another rule already took. Before::

    dq = dequantize(q);  linear = aten.linear(dq, w_dq, b);  q_1 = quantize(linear)

After: the same graph, with ``linear.meta["quantization_annotation"]`` an empty, claimed
annotation, so a linear rule does not wrap ``dq -> linear -> q_1`` a second time.
(Observers a quantizer would still ask for on region values are dropped when observers are
built, see ``drop_observers_of_quantized_values``.)

A model converted in this process still carries the annotations its prepare used; they
describe observers convert replaced, so they are dropped first (torchao reuses them and
quantizes those ops a second time). Ops that stayed float are then free for this quantizer.

Only metadata changes, so the pass reports no graph change.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.contract.annotation import (
    QuantizationAnnotation,
    drop_converted_annotations,
    set_annotation,
)
from pt2e_quant.graph.quantized_regions import find_quantized_regions

__all__ = ["claim_quantized_regions"]


def claim_quantized_regions(gm: GraphModule) -> bool:
    """Mark every op of an already quantized region as annotated; the graph is unchanged."""
    drop_converted_annotations(gm.graph.nodes)
    for node in find_quantized_regions(gm).ops:
        set_annotation(node, QuantizationAnnotation(_annotated=True))
    return False
