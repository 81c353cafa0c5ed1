"""Spec validation at the edges the basic field tests leave open.

Specs are checked where a quantizer author writes them so a mistake fails there, naming the
field. These pin three edges: a ``bool`` is not an int range bound, a fixed zero point must
lie inside the range from below as well as above, and a DerivedQuantizationSpec (which holds
a list) can still be hashed, as prepare and user code put specs in sets and dict keys.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant.observer as our_observer
from pt2e_quant import DerivedQuantizationSpec, FixedQParamsQuantizationSpec, QuantizationSpec
from pt2e_quant.errors import SpecError


@pytest.mark.parametrize("field", ["quant_min", "quant_max"])
def test_bool_range_bound_is_rejected(field: str) -> None:
    """``True`` is an int to Python but never a meant range bound (a flag passed by position)."""
    with pytest.raises(SpecError, match=rf"QuantizationSpec\.{field} must be an int"):
        QuantizationSpec(
            dtype=torch.int8,
            observer_or_fake_quant_ctr=our_observer.MinMaxObserver,
            **{field: True},
        )


def test_fixed_zero_point_below_quant_min_is_rejected() -> None:
    """A zero point under the range would make the fixed qparams unrepresentable."""
    with pytest.raises(SpecError, match=r"FixedQParamsQuantizationSpec\.zero_point=-1"):
        FixedQParamsQuantizationSpec(
            dtype=torch.uint8, scale=1 / 256, zero_point=-1, quant_min=0, quant_max=255
        )


def test_derived_spec_is_hashable_by_identity() -> None:
    """Frozen with a list field: equal by value, hashed by identity, so usable as a key."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")

    def derive(observers: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor([1.0]), torch.tensor([0])

    def make() -> DerivedQuantizationSpec:
        return DerivedQuantizationSpec(
            derived_from=[x], derive_qparams_fn=derive, dtype=torch.int32
        )

    a, b = make(), make()
    assert a == b
    assert len({a, b, a}) == 2
