"""simulator_for: an observer's rounding, computed before convert exactly as convert's q/dq ops do."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from pt2e_quant import QuantizationAnnotation, QuantizationSpec, convert_pt2e, prepare_pt2e
from pt2e_quant.algorithms.simulated_observers import (
    UnsimulatedObserverError,
    quantizes,
    simulator_for,
)
from pt2e_quant.observer import (
    HistogramObserver,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from pt2e_quant.observer.granular import PerGroupMinMaxObserver, PerTokenDynamicObserver
from pt2e_quant.ops.families import LINEAR_OPS
from tests.core.contract.quantizer_fixtures import FunctionQuantizer

INT8 = {"dtype": torch.int8, "quant_min": -128, "quant_max": 127}
STATIC_INT8 = QuantizationSpec(
    **INT8, qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=HistogramObserver
)
STATIC_UINT8 = QuantizationSpec(
    dtype=torch.uint8,
    quant_min=0,
    quant_max=255,
    qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=MinMaxObserver,
)
DYNAMIC_INT8 = QuantizationSpec(
    **INT8,
    qscheme=torch.per_tensor_affine,
    is_dynamic=True,
    observer_or_fake_quant_ctr=PlaceholderObserver,
)
PER_TOKEN = QuantizationSpec(
    **INT8,
    qscheme=torch.per_tensor_affine,
    is_dynamic=True,
    observer_or_fake_quant_ctr=PerTokenDynamicObserver,
)
FLOAT16 = QuantizationSpec(dtype=torch.float16, observer_or_fake_quant_ctr=PlaceholderObserver)
WEIGHT_PER_TENSOR = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-127,
    quant_max=127,
    qscheme=torch.per_tensor_symmetric,
    observer_or_fake_quant_ctr=MinMaxObserver,
)
WEIGHT_PER_CHANNEL = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-127,
    quant_max=127,
    qscheme=torch.per_channel_symmetric,
    ch_axis=0,
    observer_or_fake_quant_ctr=PerChannelMinMaxObserver,
)
WEIGHT_PER_GROUP = QuantizationSpec(
    dtype=torch.int8,
    quant_min=-8,
    quant_max=7,
    qscheme=torch.per_channel_symmetric,
    ch_axis=0,
    observer_or_fake_quant_ctr=PerGroupMinMaxObserver.with_args(group_size=8),
)


def _prepared(activation: QuantizationSpec, weight: QuantizationSpec):
    def annotate(gm: GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.target in LINEAR_OPS:
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={node.args[0]: activation, node.args[1]: weight},
                    _annotated=True,
                )

    torch.manual_seed(0)
    model = nn.Linear(16, 4).eval()
    batches = [(torch.randn(3, 16),) for _ in range(3)]
    exported = torch.export.export(model, batches[0]).module()
    prepared = prepare_pt2e(exported, FunctionQuantizer(annotate))
    for batch in batches:
        prepared(*batch)
    return model, prepared, batches


@pytest.mark.parametrize(
    ("activation", "weight"),
    [
        (STATIC_INT8, WEIGHT_PER_TENSOR),
        (STATIC_UINT8, WEIGHT_PER_CHANNEL),
        (DYNAMIC_INT8, WEIGHT_PER_CHANNEL),
        (PER_TOKEN, WEIGHT_PER_GROUP),
        (FLOAT16, WEIGHT_PER_GROUP),
    ],
    ids=["static_per_tensor", "uint8_per_channel", "dynamic", "per_token_per_group", "fp16"],
)
def test_the_simulated_layer_equals_the_converted_one(activation, weight) -> None:
    model, prepared, batches = _prepared(activation, weight)
    (linear,) = [n for n in prepared.graph.nodes if n.target in LINEAR_OPS]
    input_observer = prepared.get_submodule(str(linear.args[0].target))
    weight_observer = prepared.get_submodule(str(linear.args[1].target))
    simulate_input, simulate_weight = simulator_for(input_observer), simulator_for(weight_observer)
    converted = convert_pt2e(prepared)

    x = torch.randn(3, 16)  # held out; the batch size export fixed
    expected = converted(x)
    simulated = nn.functional.linear(
        simulate_input(x), simulate_weight(model.weight.detach()), model.bias.detach()
    )
    torch.testing.assert_close(simulated, expected, atol=1e-6, rtol=0)
    assert not torch.equal(simulated, model(x))  # something was rounded
    assert quantizes(weight_observer) and quantizes(input_observer) == (activation is not FLOAT16)


def test_an_observer_that_lowers_itself_cannot_be_simulated() -> None:
    class SelfLowering(MinMaxObserver):
        def convert(self, gm, node) -> None:  # a user-defined lowering
            pass

    with pytest.raises(UnsimulatedObserverError, match="SelfLowering defines its own convert"):
        simulator_for(SelfLowering())


def test_a_float_observer_is_the_identity() -> None:
    x = torch.randn(4)
    assert simulator_for(PlaceholderObserver(dtype=torch.float32))(x) is x
    assert not quantizes(PlaceholderObserver(dtype=torch.float32))
