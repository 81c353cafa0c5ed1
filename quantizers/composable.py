"""Several quantizers applied to one model, each claiming the nodes the earlier ones left.

Typical use: an embedding quantizer for the tables, then a backend quantizer for everything
else. Order is the contract: every sub-quantizer sees the annotations of the earlier ones and
must skip nodes they claimed, so the first quantizer that wants a node gets it. A
sub-quantizer that changes or drops an earlier annotation would silently change what the
earlier one decided, so :class:`ComposableQuantizer` checks after every ``annotate`` and
raises, naming the node and both quantizers.

Example: ``[dynamic linear quantizer, static quantizer]`` gives dynamically quantized linears
and statically quantized convs; the reverse order gives static everything.

Each sub-quantizer's ``validate`` sees only the annotations it wrote (and any present before
the composition): a backend's rules are about the nodes it claimed, so XNNPACK's "int8 only"
must not reject the uint8 tables an embedding quantizer claimed before it.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import QuantizationAnnotation, get_annotation, set_annotation
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.specs import EdgeOrNode
from pt2e_quant.errors import AnnotationError, describe_node, graph_context

__all__ = ["ComposableQuantizer", "AnnotationOverwriteError"]


class AnnotationOverwriteError(AnnotationError, RuntimeError):
    """A composed quantizer changed or removed an annotation an earlier one wrote.

    Also a ``RuntimeError``, which is what torchao's ``ComposableQuantizer`` raises, so code
    written against torchao keeps catching it.
    """


@dataclass(frozen=True)
class _Record:
    """What one annotation looked like when its owner finished annotating."""

    owner: int | None  # position of the quantizer that wrote it; None: present beforehand
    annotation: QuantizationAnnotation
    inputs: tuple[tuple[Node, Any], ...]
    output: Any
    allow_implicit_sharing: bool
    annotated: bool

    @classmethod
    def of(cls, annotation: QuantizationAnnotation, owner: int | None) -> _Record:
        return cls(
            owner,
            annotation,
            tuple(annotation.input_qspec_map.items()),
            annotation.output_qspec,
            annotation.allow_implicit_sharing,
            bool(annotation._annotated),
        )


def _same_spec(a: Any, b: Any) -> bool:
    return a is b or a == b


def _difference(record: _Record, current: QuantizationAnnotation | None) -> str | None:
    """How ``current`` differs from the recorded annotation, or None if it does not."""
    if current is None:
        return "removed it"
    if current is not record.annotation:
        return "replaced it with another QuantizationAnnotation object"
    now = _Record.of(current, record.owner)
    if [key for key, _ in now.inputs] != [key for key, _ in record.inputs] or not all(
        _same_spec(a, b) for (_, a), (_, b) in zip(now.inputs, record.inputs, strict=True)
    ):
        return "changed its input_qspec_map"
    if not _same_spec(now.output, record.output):
        return "changed its output_qspec"
    if now.allow_implicit_sharing != record.allow_implicit_sharing:
        return "changed its allow_implicit_sharing"
    if now.annotated != record.annotated:
        return "changed its _annotated flag"
    return None


class ComposableQuantizer(Quantizer):
    """Runs ``quantizers`` in order: transforms, annotations (checked), validations, callbacks."""

    def __init__(self, quantizers: Sequence[Quantizer]) -> None:
        super().__init__()
        for position, quantizer in enumerate(quantizers):
            if not callable(getattr(quantizer, "annotate", None)):
                raise TypeError(
                    f"ComposableQuantizer: item {position} ({type(quantizer).__name__}) is not "
                    "a Quantizer (it has no annotate method)."
                )
        self.quantizers = list(quantizers)
        # which quantizer wrote each annotation (None: present beforehand); read by validate
        self._owners: weakref.WeakKeyDictionary[Node, int | None] = weakref.WeakKeyDictionary()

    def _name(self, position: int | None) -> str:
        if position is None:
            return "an annotation present before ComposableQuantizer ran"
        return f"quantizer #{position} ({type(self.quantizers[position]).__name__})"

    def leaf_quantizers(self) -> list[Any]:
        """The composed quantizers, nested compositions flattened (coverage reports ask each)."""
        leaves: list[Any] = []
        for quantizer in self.quantizers:
            nested = getattr(quantizer, "leaf_quantizers", None)
            leaves += nested() if callable(nested) else [quantizer]
        return leaves

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        """Each quantizer's transform, fed the previous one's result."""
        for quantizer in self.quantizers:
            model = quantizer.transform_for_annotation(model)
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        records = {
            node: _Record.of(annotation, None)
            for node in model.graph.nodes
            if (annotation := get_annotation(node)) is not None
        }
        for position, quantizer in enumerate(self.quantizers):
            quantizer.annotate(model)
            self._check_unchanged(records, position)
            for node in model.graph.nodes:
                annotation = get_annotation(node)
                if annotation is not None and node not in records:
                    records[node] = _Record.of(annotation, position)
        for node, record in records.items():
            self._owners[node] = record.owner
        return model

    def _check_unchanged(self, records: dict[Node, _Record], position: int) -> None:
        for node, record in records.items():
            difference = _difference(record, get_annotation(node))
            if difference is None:
                continue
            raise AnnotationOverwriteError(
                f"ComposableQuantizer: {self._name(position)} {difference} on "
                f"{describe_node(node)}, which {self._name(record.owner)} had annotated. A "
                "composed quantizer must skip nodes an earlier one claimed (check "
                "is_annotated(node)); put the quantizer that should decide this node first.\n"
                + graph_context(node)
            )

    def validate(self, model: GraphModule) -> None:
        """Every sub-quantizer's own checks, each on the annotations it wrote."""
        for position, quantizer in enumerate(self.quantizers):
            with self._only_annotations_of(model, position):
                quantizer.validate(model)

    @contextmanager
    def _only_annotations_of(self, model: GraphModule, position: int) -> Iterator[None]:
        """Temporarily detach the annotations other sub-quantizers wrote."""
        hidden: dict[Node, QuantizationAnnotation] = {}
        for node in model.graph.nodes:
            annotation = get_annotation(node)
            if annotation is not None and self._owners.get(node, position) not in (position, None):
                hidden[node] = annotation
                set_annotation(node, None)
        try:
            yield
        finally:
            for node, annotation in hidden.items():
                set_annotation(node, annotation)

    def prepare_obs_or_fq_callback(
        self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]
    ) -> None:
        """Each sub-quantizer's callback, in order, so later ones see earlier replacements."""
        for quantizer in self.quantizers:
            quantizer.prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)
