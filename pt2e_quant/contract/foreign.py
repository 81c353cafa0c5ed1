"""Annotations written with torchao's classes, read once and rewritten as ours.

The quantizers people deploy with (ExecuTorch's vendor backends, NNCF's OpenVINOQuantizer,
torchao's own) annotate with ``torchao.quantization.pt2e.quantizer``'s ``QuantizationSpec``,
``SharedQuantizationSpec``, ``DerivedQuantizationSpec``, ``FixedQParamsQuantizationSpec`` and
``QuantizationAnnotation``. Those classes carry the same fields as ours under the same names,
so they are recognised by shape, never imported: a spec is known by the name of a class in its
MRO (a vendor's subclass of torchao's ``QuantizationSpec`` is still a ``QuantizationSpec``) and
read field by field. prepare calls :func:`translate_annotations` right after the quantizer's
``annotate`` / ``validate``, so every pass after that boundary sees only our classes.

The observers and fake-quants a foreign spec constructs are kept as they are (a vendor's
subclass with its own ``convert``, torchao's fake-quants and affine observers): their numerics
are the quantizer's contract. The one exception is torchao's stock observer classes, which
prepare builds as ours (``pt2e_quant.observer.stock``): same arguments, bit-identical qparams.

torchao does not check a spec's range against its dtype; OpenVINO's int8 specs, for one,
declare 0..255. A foreign spec our checks reject is therefore still accepted, exactly as
written, with a :class:`ForeignSpecWarning` naming what looks wrong.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import ANNOTATION_KEY, QuantizationAnnotation
from pt2e_quant.contract.specs import (
    DerivedQuantizationSpec,
    FixedQParamsQuantizationSpec,
    QuantizationSpec,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from pt2e_quant.errors import AnnotationError, SpecError, graph_context, warn_user

__all__ = [
    "ForeignSpecWarning",
    "describe_quantizer",
    "is_foreign_class",
    "translate_annotations",
]

#: our spec classes by the class name a foreign spec carries in its MRO
_SPEC_KINDS: dict[str, type[QuantizationSpecBase]] = {
    cls.__name__: cls
    for cls in (
        QuantizationSpec,
        FixedQParamsQuantizationSpec,
        SharedQuantizationSpec,
        DerivedQuantizationSpec,
    )
}
_ANNOTATION_FIELDS = ("input_qspec_map", "output_qspec")


class ForeignSpecWarning(UserWarning):
    """A foreign quantizer's spec breaks a rule pt2e_quant enforces on its own specs; it is
    used as written, as torchao would."""


def describe_quantizer(quantizer: Any) -> str:
    """``XNNPACKQuantizer (executorch.backends.xnnpack.quantizer...)``: who wrote annotations."""
    cls = type(quantizer)
    return f"{cls.__qualname__} ({cls.__module__})"


def is_foreign_class(cls: Any) -> bool:
    """True for a class defined outside pt2e_quant and the quantizers shipped with it."""
    module = getattr(cls, "__module__", "") or ""
    return not (module.startswith("pt2e_quant") or module.startswith("quantizers"))


def _spec_kind(value: Any) -> type[QuantizationSpecBase] | None:
    for cls in type(value).__mro__:
        kind = _SPEC_KINDS.get(cls.__name__)
        if kind is not None:
            return kind
    return None


class _Translator:
    """Translates the specs of one graph; a foreign spec object used on several edges
    becomes one spec object of ours, so identity-based sharing survives."""

    def __init__(self, quantizer: Any) -> None:
        self.who = describe_quantizer(quantizer)
        self.done: dict[int, QuantizationSpecBase | None] = {}
        self.keep_alive: list[Any] = []

    def spec(self, value: Any, node: Node, role: str) -> QuantizationSpecBase | None:
        if value is None or isinstance(value, QuantizationSpecBase):
            return value
        key = id(value)
        if key not in self.done:
            self.keep_alive.append(value)  # ids stay unique while the table lives
            self.done[key] = self._convert(value, node, role)
        return self.done[key]

    def _convert(self, value: Any, node: Node, role: str) -> QuantizationSpecBase:
        kind = _spec_kind(value)
        if kind is None:
            cls = type(value)
            raise AnnotationError(
                f"{self.who} put a {cls.__module__}.{cls.__qualname__} as the spec of the {role}, "
                "which is not a quantization spec pt2e_quant can read. A "
                "quantizer annotates with QuantizationSpec, SharedQuantizationSpec, "
                "DerivedQuantizationSpec or FixedQParamsQuantizationSpec (torchao's or "
                "pt2e_quant's, or a subclass of one); fix the quantizer's annotate, or "
                "report it to its authors.\n" + graph_context(node)
            )
        values = {}
        for f in fields(kind):
            default = f.default if f.default is not MISSING else None
            values[f.name] = getattr(value, f.name, default)
        try:
            return kind(**values)
        except SpecError as error:
            warn_user(
                f"{self.who}: the spec of the {role} is used as written, as torchao would, "
                f"though pt2e_quant rejects it in its own specs: {error}",
                ForeignSpecWarning,
            )
            return _unchecked(kind, values)

    def annotation(self, node: Node, annotation: Any) -> QuantizationAnnotation:
        inputs = getattr(annotation, "input_qspec_map", None) or {}
        return QuantizationAnnotation(
            input_qspec_map={
                source: self.spec(
                    spec, node, f"edge '{getattr(source, 'name', source)}' -> '{node.name}'"
                )
                for source, spec in inputs.items()
            },
            output_qspec=self.spec(
                getattr(annotation, "output_qspec", None), node, f"output of '{node.name}'"
            ),
            allow_implicit_sharing=bool(getattr(annotation, "allow_implicit_sharing", True)),
            _annotated=bool(getattr(annotation, "_annotated", False)),
        )


def _unchecked(kind: type[QuantizationSpecBase], values: dict[str, Any]) -> QuantizationSpecBase:
    """A spec of ``kind`` holding ``values`` without running its checks."""
    spec = object.__new__(kind)
    for name, value in values.items():
        object.__setattr__(spec, name, value)
    return spec


def translate_annotations(gm: GraphModule, quantizer: Any) -> bool:
    """Rewrite every annotation of ``gm`` written with foreign classes as ours; returns
    whether any was rewritten. ``quantizer`` is named in errors and warnings."""
    translator = _Translator(quantizer)
    changed = False
    for node in gm.graph.nodes:
        annotation = node.meta.get(ANNOTATION_KEY)
        if annotation is None:
            continue
        if isinstance(annotation, QuantizationAnnotation):
            specs = [annotation.output_qspec, *annotation.input_qspec_map.values()]
            if all(s is None or isinstance(s, QuantizationSpecBase) for s in specs):
                continue
        elif not all(hasattr(annotation, name) for name in _ANNOTATION_FIELDS):
            cls = type(annotation)
            raise AnnotationError(
                f"{translator.who} stored a {cls.__module__}.{cls.__qualname__} under "
                f"node.meta['{ANNOTATION_KEY}'] of '{node.name}', which has no input_qspec_map "
                "/ output_qspec: it is not a QuantizationAnnotation. Fix the quantizer's "
                "annotate, or report it to its authors.\n" + graph_context(node)
            )
        node.meta[ANNOTATION_KEY] = translator.annotation(node, annotation)
        changed = True
    return changed
