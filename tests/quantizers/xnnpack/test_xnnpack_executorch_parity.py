"""XNNPACKQuantizer vs ExecuTorch's: same quantized edges and bit-identical outputs.

Every zoo model, under every preset (per-tensor, per-channel, dynamic, QAT), is quantized by
ExecuTorch's XNNPACKQuantizer through torchao's prepare/convert and by ours through our
pipeline, from the same exported graph and calibration batch. Both converted graphs must
quantize the same edges (each q/dq and compute op with its inputs and users, as a multiset),
list their q/dq and compute ops in the same order (QAT too, where torchao's conv-bn rewrite
re-inserts each conv after the input's q/dq), and give bit-identical outputs on a fresh
input. This is the promise that migrating from
ExecuTorch's quantizer is an import change; the one model skipped under QAT is a peer bug,
and its reason names the test that pins our behaviour.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn
from torch.fx import GraphModule

from quantizers.xnnpack.quantizer import get_symmetric_quantization_config
from tests.graph_check import qdq_and_compute_ops, quantized_edges
from tests.models import ZOO
from tests.models.xnnpack_patterns import (
    SHARED_QPARAM_CASES,
    ComputedWeight,
    NonFloat32Binary,
    SharedQParamOp,
)
from tests.quantizers.xnnpack._xnnpack_peer_run import (
    PRESETS,
    run_peer_and_ours,
    skip_peer_conv_bn_annotators,
)
from tests.quantizers.xnnpack._xnnpack_quantize import (
    global_quantizer,
)


@pytest.fixture(scope="module")
def peer(peer_pattern_cache):
    """ExecuTorch's quantizer module and torchao's move-to-eval (pattern exports cached)."""
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer
    from torchao.quantization.pt2e import move_exported_model_to_eval

    return xnnpack_quantizer, move_exported_model_to_eval


def _has_batch_norm(name: str) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ZOO[name]().modules())


#: Zoo models with a transposed conv; under per-channel QAT the peer quantizes its weight
#: along the wrong axis (with or without batch norm), so the outputs cannot be bit-identical.
_PEER_QAT_CONV_TRANSPOSE_BN_BUG = frozenset({"conv_transpose_decoder"})


def _zoo_cases():
    """Every zoo model under every preset."""
    for name in sorted(ZOO):
        for preset in sorted(PRESETS):
            marks = ()
            if preset == "qat" and name in _PEER_QAT_CONV_TRANSPOSE_BN_BUG:
                reason = (
                    "deliberate difference (peer bug): under QAT it splits a transposed conv's "
                    "weight along axis 0; see "
                    "test_qat_conv_transpose_bn_weight_axis_is_1"
                )
                marks = pytest.mark.skip(reason=reason)
            yield pytest.param(name, preset, marks=marks, id=f"{name}-{preset}")


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize(("name", "preset"), _zoo_cases())
def test_same_qdq_and_bit_identical_outputs_as_executorch(
    peer, monkeypatch: pytest.MonkeyPatch, name: str, preset: str
) -> None:

    peer_module, peer_to_eval = peer
    qat = PRESETS[preset].get("is_qat", False)
    if not (qat and _has_batch_norm(name)):
        skip_peer_conv_bn_annotators(monkeypatch)
    torch.manual_seed(0)
    model = ZOO[name]()
    example = model.example_inputs()
    test_input = tuple(torch.randn_like(t) if t.is_floating_point() else t for t in example)
    # QAT exports the model in training mode (batch norm and dropout stay trainable)
    exported = torch.export.export(model.train(qat), example).module()
    config = peer_module.get_symmetric_quantization_config(**PRESETS[preset])
    (theirs, theirs_out), (ours, ours_out) = run_peer_and_ours(
        peer_module.XNNPACKQuantizer().set_global(config),
        global_quantizer(get_symmetric_quantization_config(**PRESETS[preset])),
        exported,
        example,
        test_input,
        peer_to_eval,
        qat,
    )
    assert quantized_edges(ours) == quantized_edges(theirs)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    assert any(n.startswith("quantized_decomposed.") for n in qdq_and_compute_ops(ours)) or (
        preset == "dynamic" and name == "conv_bn_relu_chain"  # conv -> relu: no dynamic rule
    )
    assert all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out, strict=True))


def _shared_qparam_cases():
    for name in sorted(SHARED_QPARAM_CASES):
        marks = ()
        if name == "unsqueeze":
            reason = (
                "deliberate difference: ExecuTorch leaves unsqueeze float and re-quantizes "
                "the view; see test_pools_and_views_share_their_producers_qparams"
            )
            marks = pytest.mark.skip(reason=reason)
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize("name", _shared_qparam_cases())
def test_qparam_sharing_op_matches_executorch(
    peer, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Each qparam-sharing op alone between two weighted ops (the zoo reaches most of them
    only inside larger models, and reshape and slice not at all): same quantized edges and
    bit-identical outputs as ExecuTorch's quantizer."""
    peer_module, _ = peer
    skip_peer_conv_bn_annotators(monkeypatch)
    op, shape, _ = SHARED_QPARAM_CASES[name]
    torch.manual_seed(0)
    model = SharedQParamOp(op, shape).eval()
    _assert_same_as_executorch(peer_module, {}, model, (torch.randn(shape),))


#: Models the zoo and the random graphs do not reach: weights computed from parameters, and
#: add / mul on float16 / float64 values next to float32 patterns.
_EDGE_MODELS = {
    "conv_scaled_weight": lambda: ComputedWeight("conv_scaled"),
    "linear_lora_weight": lambda: ComputedWeight("linear_lora"),
    "float16_add": lambda: NonFloat32Binary(torch.add, torch.float16),
    "float64_mul": lambda: NonFloat32Binary(torch.mul, torch.float64),
}


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", sorted(_EDGE_MODELS))
def test_edge_models_match_executorch(
    peer, monkeypatch: pytest.MonkeyPatch, name: str, per_channel: bool
) -> None:
    """A computed weight is quantized once, as a weight; a non-float32 add / mul stays float:
    the same quantized edges and bit-identical outputs as ExecuTorch's quantizer."""
    peer_module, _ = peer
    skip_peer_conv_bn_annotators(monkeypatch)
    torch.manual_seed(0)
    model = _EDGE_MODELS[name]().eval()
    test_input = tuple(torch.randn_like(t) for t in model.example_inputs())
    _assert_same_as_executorch(peer_module, {"is_per_channel": per_channel}, model, test_input)


@pytest.mark.torchao
@pytest.mark.executorch
def test_narrow_ranges_match_executorch(peer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-default range knobs (symmetric -127..127 activations, 7-bit per-channel weights):
    the same quantized edges, every q/dq with the same range, and bit-identical outputs as
    ExecuTorch's quantizer given the same knobs."""
    peer_module, _ = peer
    skip_peer_conv_bn_annotators(monkeypatch)
    knobs = {"is_per_channel": True, "act_qmin": -127, "act_qmax": 127}
    knobs |= {"weight_qmin": -63, "weight_qmax": 63}
    torch.manual_seed(0)
    model = ZOO["resnet_basic_block_downsample"]().eval()
    test_input = tuple(torch.randn_like(t) for t in model.example_inputs())
    ours = _assert_same_as_executorch(peer_module, knobs, model, test_input)
    ranges = collections.Counter(
        tuple(n.args[-3:-1])
        for n in ours.graph.nodes
        if str(n.target).startswith("quantized_decomposed.")
    )
    assert set(ranges) == {(-127, 127), (-63, 63)}, ranges


def _assert_same_as_executorch(
    peer_module, knobs: dict, model: nn.Module, test_input: tuple
) -> GraphModule:
    """Quantize one export of ``model`` with ExecuTorch's quantizer (through torchao) and
    ours, both given ``get_symmetric_quantization_config(**knobs)``; assert the same
    quantized edges, the same op order and bit-identical outputs on ``test_input``; return
    ours."""

    example = model.example_inputs()
    exported = torch.export.export(model, example).module()
    peer_quantizer = peer_module.XNNPACKQuantizer().set_global(
        peer_module.get_symmetric_quantization_config(**knobs)
    )
    config = get_symmetric_quantization_config(**knobs)
    (theirs, theirs_out), (ours, ours_out) = run_peer_and_ours(
        peer_quantizer, global_quantizer(config), exported, example, test_input, None, False
    )
    assert quantized_edges(ours) == quantized_edges(theirs)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out, strict=True))
    return ours
