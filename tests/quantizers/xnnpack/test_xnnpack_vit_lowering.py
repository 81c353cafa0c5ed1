"""A ViT-style classifier (class-token ``cat``, position-embedding ``add``, SDPA under a mask
built from positions) lowered to XNNPACK: fewer ops outside the delegate than ExecuTorch's
quantizer leaves, and a ``.pte`` that computes what our converted model computes.

The cat and the add quantize exactly as ExecuTorch's quantizer quantizes them (same quantized
edges, bit-identical outputs). What differed was the attention mask: its positions are
``arange(17) + 0``, integer arithmetic that depends on no input. ExecuTorch's quantizer lifts
the ``0`` into a float tensor, which turns the positions into float32: XNNPACK then runs the
add and an unsqueeze, and a ``_to_dim_order_copy`` (the int64 -> float32 cast) stays outside.
We keep the integer dtypes, so before ``fold_index_arithmetic`` our program kept ``add`` and
one more ``unsqueeze_copy`` outside the delegate (26 ops against the peer's 25). Now the
XNNPACK quantizer computes the mask's positions once, before annotation: ``arange``, ``add``,
three ``unsqueeze`` and ``ge`` become one boolean buffer (20 ops left).
"""

from __future__ import annotations

import collections
import functools
import warnings

import pytest
import torch

from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import quantized_edges
from tests.models.zoo_vit import TinyViT
from tests.ptq import quantize_once

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

from tests.quantizers.xnnpack.test_xnnpack_lowering import (  # noqa: E402
    lower,
    output_steps,
    run_pte,
    undelegated_ops,
)

#: What stays outside the delegates, and why. SDPA decomposes into a scaled matmul with the
#: mask applied by ``where`` (2 ``mul.Scalar`` scaling q and k; ``eq`` / ``logical_not`` /
#: ``any`` / ``full_like`` / a second ``where`` guard fully masked rows; 2 ``scalar_tensor``
#: fill values; 4 ``expand_copy`` feed the batched matmuls and the mask's broadcast to
#: (2, 2, 17, 17)); the mask's own expand to (2, 1, 17, 17); XNNPACK has no layer norm (3);
#: the class token is read with ``select_copy``. No integer op and no cast is left.
EXPECTED_UNDELEGATED = collections.Counter(
    {
        "aten.any.dim": 1,
        "aten.eq.Scalar": 1,
        "aten.expand_copy.default": 5,
        "aten.full_like.default": 1,
        "aten.logical_not.default": 2,
        "aten.mul.Scalar": 2,
        "aten.native_layer_norm.default": 3,
        "aten.select_copy.int": 1,
        "aten.where.self": 2,
        "scalar_tensor.default": 2,
    }
)

PER_CHANNEL = {"is_per_channel": True}


def _qdq_edges(gm) -> collections.Counter:
    """The quantized edges that touch a q/dq (the mask's index arithmetic left out: ours
    folds it, the peer's computes it in float32)."""
    return collections.Counter(
        {edge: n for edge, n in quantized_edges(gm).items() if "quantized_decomposed" in str(edge)}
    )


def _model_and_example() -> tuple[TinyViT, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = TinyViT().eval()
    return model, model.example_inputs()


@functools.cache
def _ours():
    """(float model, converted, edge program) with our XNNPACKQuantizer (cached)."""
    model, example = _model_and_example()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**PER_CHANNEL))
    converted = quantize_once(model, example, quantizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model, converted, lower(converted, example)


def test_only_the_expected_ops_stay_outside_the_delegates() -> None:
    _, _, edge = _ours()
    assert collections.Counter(undelegated_ops(edge.exported_program())) == EXPECTED_UNDELEGATED


@pytest.mark.torchao
def test_fewer_undelegated_ops_than_executorch_quantizer_and_same_numerics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torchao")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer

    from tests.quantizers.xnnpack._xnnpack_peer_run import (
        run_peer_and_ours,
        skip_peer_conv_bn_annotators,
    )

    skip_peer_conv_bn_annotators(monkeypatch)
    model, example = _model_and_example()
    exported = torch.export.export(model, example).module()
    torch.manual_seed(1)
    test_input = (torch.randn_like(example[0]),)
    (theirs, theirs_out), (ours, ours_out) = run_peer_and_ours(
        peer.XNNPACKQuantizer().set_global(peer.get_symmetric_quantization_config(**PER_CHANNEL)),
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**PER_CHANNEL)),
        exported,
        example,
        test_input,
        None,
        False,
    )
    assert _qdq_edges(ours) == _qdq_edges(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours_out, theirs_out, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_ops = undelegated_ops(lower(theirs, example).exported_program())
        our_ops = undelegated_ops(lower(ours, example).exported_program())
    assert len(our_ops) < len(their_ops), f"ours {sorted(our_ops)}, theirs {sorted(their_ops)}"


def test_converted_model_tracks_the_float_model() -> None:
    model, converted, _ = _ours()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference, quantized = model(x), converted(x)
    sqnr = 20 * torch.log10(reference.norm() / (reference - quantized).norm())
    assert sqnr > 15.0, f"SQNR {sqnr:.1f} dB"


def test_pte_matches_converted_model_within_one_output_step() -> None:
    _, converted, edge = _ours()
    program = edge.to_executorch()
    (step,) = output_steps(converted)
    torch.manual_seed(1)
    for _ in range(3):
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            expected = converted(x)
        (actual,) = run_pte(program.buffer, (x,))
        error = (actual - expected).abs() / step
        assert error.max() <= 1.0 + 1e-3, f"max error {error.max():.3f} steps of {step:.3g}"
