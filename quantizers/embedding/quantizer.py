"""Weight-only quantization of embedding tables: uint8, one float scale / offset per row.

An embedding lookup reads a few rows of a large table, so the table (not the activations) is
what is worth shrinking. Each row gets its own float scale and zero point
(``torch.per_channel_affine_float_qparams`` along axis 0), which keeps rare rows with a small
range precise. After convert the graph reads::

    weight (uint8 constant) ─ dequantize_per_channel ─ embedding(·, indices)

The rows this quantizer matches are the aten ops ``torch.export`` produces for
``nn.Embedding`` / ``F.embedding`` and ``nn.EmbeddingBag`` (before and after decomposition),
all of which take the table as their ``weight`` argument. Specs are the same as torchao's
``EmbeddingQuantizer``, so both pipelines give bit-identical models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from pt2e_quant.contract.annotation import (
    QuantizationAnnotation,
    get_annotation,
    is_annotated,
    set_annotation,
)
from pt2e_quant.contract.quantizer import Quantizer
from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.errors import AnnotationError, describe_node, graph_context
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.constants import foldable_constant_nodes
from pt2e_quant.graph.patterns import is_call
from pt2e_quant.observer import PerChannelMinMaxObserver
from pt2e_quant.ops.families import EMBEDDING_OPS
from quantizers.config import QuantizationConfig, checked_config
from quantizers.scoping import ScopedConfigs

__all__ = ["EMBEDDING_OPS", "EmbeddingQuantizer", "get_embedding_quantization_config"]

_aten = torch.ops.aten


def get_embedding_quantization_config() -> QuantizationConfig:
    """uint8 per-row float-qparams weights, activations left float (torchao's choice).

    The eps floor (2**-12) keeps the scale of a constant row (e.g. a zeroed padding row) from
    collapsing to zero.
    """
    weight = QuantizationSpec(
        dtype=torch.uint8,
        qscheme=torch.per_channel_affine_float_qparams,
        ch_axis=0,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12),
    )
    return QuantizationConfig(None, None, weight, None)


class EmbeddingQuantizer(Quantizer):
    """Quantizes the table of every embedding lookup, weight only.

    Scoping works as in every backend (:class:`quantizers.scoping.ScopedConfigs`): the global
    config defaults to :func:`get_embedding_quantization_config`, and
    ``set_module_name(name, None)`` leaves one table float. Nodes an earlier quantizer already
    claimed are skipped, so the quantizer composes (see ``quantizers.composable``).
    """

    coverage_name = "embedding"

    def __init__(self, config: QuantizationConfig | None = None) -> None:
        super().__init__()
        config = _checked(config, "EmbeddingQuantizer(config)")
        default = get_embedding_quantization_config() if config is None else config
        self.scopes = ScopedConfigs(global_config=default)

    def set_global(self, config: QuantizationConfig | None) -> EmbeddingQuantizer:
        self.scopes.global_config = _checked(config, "EmbeddingQuantizer.set_global")
        return self

    def set_module_type(
        self, module_type: type[torch.nn.Module], config: QuantizationConfig | None
    ) -> EmbeddingQuantizer:
        self.scopes.module_type[module_type] = _checked(
            config, "EmbeddingQuantizer.set_module_type"
        )
        return self

    def set_module_name(
        self, module_name: str, config: QuantizationConfig | None
    ) -> EmbeddingQuantizer:
        self.scopes.module_name[module_name] = _checked(
            config, "EmbeddingQuantizer.set_module_name"
        )
        return self

    def set_operator_type(
        self, operator: Any, config: QuantizationConfig | None
    ) -> EmbeddingQuantizer:
        self.scopes.set_operator_type(
            operator, _checked(config, "EmbeddingQuantizer.set_operator_type")
        )
        return self

    def rule_ops(self) -> frozenset:
        """The aten overloads this quantizer quantizes (coverage reports read it)."""
        return EMBEDDING_OPS

    def scope_decision(self, node: Node) -> tuple[QuantizationConfig | None, str]:
        """The config the scoping gives ``node`` and the setter that decided it."""
        return self.scopes.decide(node)

    def annotate(self, model: GraphModule) -> GraphModule:
        for node in model.graph.nodes:
            if not is_call(node, EMBEDDING_OPS) or is_annotated(node):
                continue
            config = self.scopes.config_for(node)
            weight = argument(node, "weight")
            if config is None or config.weight is None or not isinstance(weight, Node):
                continue
            annotation = QuantizationAnnotation({weight: config.weight}, _annotated=True)
            set_annotation(node, annotation)
        return model

    def validate(self, model: GraphModule) -> None:
        """Reject embedding annotations that cannot become a stored quantized table.

        * The table must be stored (a constant or a graph input) or computed from module
          constants alone (``self.weight.float()``, ``self.weight[:n]``), which convert
          pre-computes as torchao does. A table computed from the model's inputs would be
          quantized at run time with qparams observed in calibration.
        * The indices are integers and cannot carry a quantization spec.
        """
        constants: set[Node] | None = None
        for node in model.graph.nodes:
            annotation = get_annotation(node) if is_call(node, EMBEDDING_OPS) else None
            if annotation is None:
                continue
            weight = argument(node, "weight")
            if annotation.input_qspec_map.get(weight) is not None and weight.op not in (
                "get_attr",
                "placeholder",
            ):
                if constants is None:
                    constants = foldable_constant_nodes(model)
                if weight not in constants:
                    raise AnnotationError(
                        f"The table of embedding {describe_node(node)} is quantized, but it "
                        f"is computed in the graph by {describe_node(weight)} from values "
                        "that are not module constants (model inputs, or an op with side "
                        "effects), so its per-row qparams observed in calibration would not "
                        "fit the values seen at run time. Compute the table from parameters "
                        "or buffers only, or leave this embedding float "
                        "(set_module_name(name, None)).\n" + graph_context(node)
                    )
            for key, spec in annotation.input_qspec_map.items():
                if key is not weight and spec is not None:
                    raise AnnotationError(
                        f"The annotation of embedding {describe_node(node)} quantizes its "
                        f"input '{key.name}', but only the table (weight) of an embedding can "
                        "be quantized: indices and offsets are integers. Remove that entry "
                        "from input_qspec_map.\n" + graph_context(node)
                    )


def _checked(config: object, setter: str) -> QuantizationConfig | None:
    return checked_config(config, setter, "get_embedding_quantization_config")
