"""torchao's "How to Write a Quantizer for PyTorch 2 Export Quantization" tutorial, migrated.

pt2e_quantizer.rst is what backend authors copy: a Quantizer subclass that writes
QuantizationSpec, SharedQuantizationSpec, FixedQParamsQuantizationSpec and
DerivedQuantizationSpec annotations straight into ``node.meta``. pt2e_quant promises that such a
hand-written quantizer keeps working after the import swap, so the tutorial's quantizer, built
from either library's spec classes, must give the same q/dq ops and bit-equal outputs.
"""

from __future__ import annotations

import copy
import itertools
import operator

import pytest
import torch
from torch import nn
from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

from tests._migration_harness import Api, assert_same, random_batches, run_both

pytestmark = pytest.mark.torchao


def backend_quantizer(api: Api, share_add_inputs: bool):
    """pt2e_quantizer.rst, sections 1-4, assembled: add found with get_source_partitions
    (section 1, HistogramObserver(eps=2**-12) int8 specs; section 2 shares the second input's
    qparams with the first), sigmoid with FixedQParamsQuantizationSpec (section 3) and conv with
    a DerivedQuantizationSpec int32 bias (section 4), each written straight into
    ``node.meta["quantization_annotation"]`` with ``_annotated=True``."""
    q = api.quantizer
    act_quantization_spec = q.QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=api.observer.HistogramObserver.with_args(eps=2**-12),
    )
    weight_quantization_spec = q.QuantizationSpec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_tensor_symmetric,
        is_dynamic=False,
        observer_or_fake_quant_ctr=api.observer.MinMaxObserver.with_args(eps=2**-12),
    )

    def derive_qparams_fn(obs_or_fqs):
        assert len(obs_or_fqs) == 2
        act_scale, _ = obs_or_fqs[0].calculate_qparams()
        weight_scale, _ = obs_or_fqs[1].calculate_qparams()
        return torch.tensor([act_scale * weight_scale]).to(torch.float32), torch.tensor([0]).to(
            torch.int32
        )

    class BackendQuantizer(q.Quantizer):
        def annotate(self, gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
            add_partitions = get_source_partitions(gm.graph, [operator.add, torch.add])
            for add_partition in itertools.chain(*add_partitions.values()):
                add_node = add_partition.output_nodes[0]
                input_act0, input_act1 = add_node.args[0], add_node.args[1]
                second = act_quantization_spec
                if share_add_inputs:
                    second = q.SharedQuantizationSpec((input_act0, add_node))
                add_node.meta["quantization_annotation"] = q.QuantizationAnnotation(
                    input_qspec_map={input_act0: act_quantization_spec, input_act1: second},
                    output_qspec=act_quantization_spec,
                    _annotated=True,
                )
            for node in gm.graph.nodes:
                if node.target == torch.ops.aten.sigmoid.default:
                    act_qspec = q.FixedQParamsQuantizationSpec(
                        dtype=torch.uint8,
                        quant_min=0,
                        quant_max=255,
                        qscheme=torch.per_tensor_affine,
                        scale=1.0 / 256.0,
                        zero_point=0,
                    )
                    node.meta["quantization_annotation"] = q.QuantizationAnnotation(
                        input_qspec_map={node.args[0]: act_qspec},
                        output_qspec=act_qspec,
                        _annotated=True,
                    )
                elif node.target == torch.ops.aten.conv2d.default:
                    input_act, weight, bias = node.args[:3]
                    bias_qspec = q.DerivedQuantizationSpec(
                        derived_from=[(input_act, node), (weight, node)],
                        derive_qparams_fn=derive_qparams_fn,
                        dtype=torch.int32,
                        quant_min=-(2**31),
                        quant_max=2**31 - 1,
                        qscheme=torch.per_tensor_symmetric,
                    )
                    node.meta["quantization_annotation"] = q.QuantizationAnnotation(
                        input_qspec_map={
                            input_act: act_quantization_spec,
                            weight: weight_quantization_spec,
                            bias: bias_qspec,
                        },
                        output_qspec=act_quantization_spec,
                        _annotated=True,
                    )
            return gm

        def validate(self, model: torch.fx.GraphModule) -> None:
            pass

    return BackendQuantizer()


class ConvSigmoidAdd(nn.Module):
    """Every spec kind of the tutorial in one graph::

    x ─┬─ conv3x3 ─ sigmoid ─ add ─ out
       └─ conv1x1 ────────────┘
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv1(x)) + self.conv2(x)


@pytest.mark.parametrize("share_add_inputs", [False, True], ids=["section1", "section2"])
def test_write_a_quantizer_tutorial(share_add_inputs: bool) -> None:
    torch.manual_seed(0)
    model = ConvSigmoidAdd().eval()
    calibration = random_batches((torch.randn(1, 3, 8, 8),), 3)

    def program(api: Api):
        exported = torch.export.export(copy.deepcopy(model), calibration[0]).module()
        prepared = api.prepare_pt2e(exported, backend_quantizer(api, share_add_inputs))
        with torch.no_grad():
            for batch in calibration:
                prepared(*batch)
        return api.convert_pt2e(prepared)

    theirs, mine = run_both(program)
    # the derived int32 bias is quantized too (one per conv)
    int32_quantizes = [
        n
        for n in mine.graph.nodes
        if "dequantize_per_tensor" in str(n.target) and torch.int32 in n.args
    ]
    assert len(int32_quantizes) == 2
    assert_same(theirs, mine, calibration[-1])
