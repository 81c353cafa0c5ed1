"""The ``Quantizer`` interface backends implement.

A quantizer looks at an exported graph and writes :class:`QuantizationAnnotation` objects on
the nodes it wants quantized; prepare turns those into observers and convert into q/dq ops.
The base class fixes the call order prepare uses:

1. ``transform_for_annotation(model)`` - optional graph rewrite before annotating,
2. ``annotate(model)`` - write annotations,
3. ``validate(model)`` - backend-specific checks (prepare also runs the generic checks of
   :mod:`pt2e_quant.contract.validation` on every quantizer, so a backend's ``validate`` only adds what
   is specific to it),
4. ``prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)`` - optional last look at
   the observers prepare built, e.g. to swap one sharing group's observer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch.fx import GraphModule

from pt2e_quant.contract.specs import EdgeOrNode

__all__ = ["Quantizer"]


class Quantizer(ABC):
    """Base class of backend quantizers (same method names as torchao's)."""

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        """Rewrite the graph before annotation (e.g. decompose an op); default: unchanged."""
        return model

    @abstractmethod
    def annotate(self, model: GraphModule) -> GraphModule:
        """Write ``QuantizationAnnotation`` objects on the nodes to quantize; return the model."""

    @abstractmethod
    def validate(self, model: GraphModule) -> None:
        """Raise if the annotations break a rule of this backend (e.g. an unsupported dtype)."""

    def prepare_obs_or_fq_callback(
        self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]
    ) -> None:
        """Inspect or replace the observers prepare built, before they are inserted."""
        return None
