"""XNNPACK's weight-only presets: what they annotate, what they refuse, and tied weights.

``get_weight_only_quantization_config`` (int8 per-channel linears, float activations) and
``get_weight_only_embedding_config`` (the Embedding backend's uint8 per-row tables) offer only
the schemes ExecuTorch can run; everything else is a SpecError naming the reason and the
alternative. Lowering and running them is tested in ``test_xnnpack_weight_only_lowering``.
"""

from __future__ import annotations

import pytest
import torch

import pt2e_quant
from pt2e_quant.errors import SpecError
from pt2e_quant.ops import qdq_ops
from quantizers import (
    ComposableQuantizer,
    EmbeddingQuantizer,
    XNNPACKQuantizer,
    get_embedding_quantization_config,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
    get_weight_only_embedding_config,
    get_weight_only_quantization_config,
)
from quantizers.xnnpack import needs_non_static_float_weights
from tests.models import export_model
from tests.models.zoo_decoder import LlamaStyleDecoder

_aten = torch.ops.aten


def _converted(linear_config, embedding: bool = True):
    torch.manual_seed(0)
    model = LlamaStyleDecoder().eval()
    (ids,) = model.example_inputs()
    quantizers = [EmbeddingQuantizer(get_weight_only_embedding_config())] if embedding else []
    quantizers.append(XNNPACKQuantizer().set_global(linear_config))
    prepared = pt2e_quant.prepare_pt2e(export_model(model), ComposableQuantizer(quantizers))
    prepared(ids)
    return model, ids, pt2e_quant.convert_pt2e(prepared)


def _calls(gm, op):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == op]


# ----------------------------------------------------------------------------- configs


def test_weight_only_config_is_the_static_presets_per_channel_weight_without_activations():
    config = get_weight_only_quantization_config()
    assert config.input_activation is None and config.output_activation is None
    assert config.bias is None and not config.is_dynamic
    assert config.weight == get_symmetric_quantization_config(is_per_channel=True).weight
    assert (config.weight.dtype, config.weight.quant_min, config.weight.quant_max) == (
        torch.int8,
        -127,
        127,
    )
    assert config.weight.qscheme == torch.per_channel_symmetric
    assert get_weight_only_quantization_config() is config  # cached
    # the same weight spec object however the arguments are spelled, so observers are shared
    assert get_weight_only_quantization_config(8, None).weight is config.weight


def test_weight_only_embedding_config_is_the_embedding_backends_uint8_per_row_scheme():
    config = get_weight_only_embedding_config()
    theirs = get_embedding_quantization_config().weight
    for field in ("dtype", "quant_min", "quant_max", "qscheme", "ch_axis", "is_dynamic"):
        assert getattr(config.weight, field) == getattr(theirs, field), field
    ours_ctr, their_ctr = (
        config.weight.observer_or_fake_quant_ctr,
        theirs.observer_or_fake_quant_ctr,
    )
    assert (ours_ctr.target, ours_ctr.p.keywords) == (their_ctr.target, their_ctr.p.keywords)
    assert get_weight_only_embedding_config() is config  # cached
    assert config.weight.dtype == torch.uint8
    assert config.weight.qscheme == torch.per_channel_affine_float_qparams
    assert config.input_activation is None and config.output_activation is None


@pytest.mark.parametrize(
    "factory", [get_weight_only_quantization_config, get_weight_only_embedding_config]
)
@pytest.mark.parametrize("bits", [2, 16, True, "8", None])
def test_weight_bits_other_than_4_or_8_are_refused(factory, bits):
    with pytest.raises(SpecError, match=r"weight_bits must be 4 or 8, got"):
        factory(weight_bits=bits)


@pytest.mark.parametrize("group_size", [None, 32, 128])
def test_4_bit_linears_are_refused_pointing_to_8da4w(group_size):
    with pytest.raises(
        SpecError,
        match=r"4-bit weight-only linears do not run on ExecuTorch.*no weight-only kernels"
        r".*no dequantize_per_channel_group.*get_per_token_quantization_config\(weight_bits=4",
    ):
        get_weight_only_quantization_config(weight_bits=4, group_size=group_size)


@pytest.mark.parametrize("group_size", [32, 0, 64])
def test_per_group_int8_linears_are_refused_naming_the_missing_kernel(group_size):
    with pytest.raises(
        SpecError, match=r"per output channel \(group_size=None\).*'Missing out variants'"
    ):
        get_weight_only_quantization_config(weight_bits=8, group_size=group_size)


def test_4_bit_embeddings_are_refused_naming_embedding_4bit():
    with pytest.raises(SpecError, match=r"4-bit embeddings need ExecuTorch's embedding_4bit"):
        get_weight_only_embedding_config(weight_bits=4, group_size=32)


def test_per_group_int8_embeddings_are_refused():
    with pytest.raises(SpecError, match=r"per row \(group_size=None\).*embedding_byte"):
        get_weight_only_embedding_config(weight_bits=8, group_size=32)


# -------------------------------------------------------------------------- annotation


def test_weight_only_preset_dequantizes_every_linear_weight_and_no_activation():
    _, ids, converted = _converted(get_weight_only_quantization_config(), embedding=False)
    linears = _calls(converted, _aten.linear.default)
    assert len(linears) == 2 * 7 + 1
    for linear in linears:
        assert linear.args[1].target == qdq_ops.DEQUANTIZE_PER_CHANNEL, linear.name
        assert not qdq_ops.is_dequantize(linear.args[0]), linear.name
        assert getattr(converted, linear.args[1].args[0].target).dtype == torch.int8
    # nothing but weights: no activation q/dq anywhere
    targets = {n.target for n in converted.graph.nodes}
    assert targets.isdisjoint(
        {
            qdq_ops.QUANTIZE_PER_TENSOR,
            qdq_ops.DEQUANTIZE_PER_TENSOR,
            qdq_ops.QUANTIZE_PER_TOKEN,
            qdq_ops.CHOOSE_QPARAMS_PER_TOKEN_ASYMMETRIC,
        }
    )


def test_tied_table_is_quantized_once_per_reader():
    """The lm_head shares the embedding's weight (one get_attr feeding both). Each reader gets
    its own stored table in its own scheme: the lookup a uint8 per-row table (embedding_byte's
    input), the lm_head an int4 per-group one (XNNPACK's 8da4w); both round the same floats."""
    model, ids, converted = _converted(get_per_token_quantization_config(4, 32))
    (lookup,) = _calls(converted, _aten.embedding.default)
    head = _calls(converted, _aten.linear.default)[-1]
    lookup_dq, head_dq = lookup.args[0], head.args[1]
    assert lookup_dq.target == qdq_ops.DEQUANTIZE_PER_CHANNEL
    assert head_dq.target == qdq_ops.DEQUANTIZE_PER_CHANNEL_GROUP
    lookup_table = getattr(converted, lookup_dq.args[0].target)
    head_table = getattr(converted, head_dq.args[0].target)
    assert lookup_table.dtype == torch.uint8 and head_table.dtype == torch.int8
    assert int(head_table.min()) >= -8 and int(head_table.max()) <= 7
    tied = model.embed_tokens.weight.detach()
    assert model.lm_head.weight is model.embed_tokens.weight
    # each dequantized table is its own rounding of the one float table
    lookup_scales = getattr(converted, lookup_dq.args[1].target)
    head_scales = getattr(converted, head_dq.args[1].target)
    lookup_error = (lookup_dq.target(*_values(converted, lookup_dq)) - tied).abs()
    head_error = (head_dq.target(*_values(converted, head_dq)) - tied).abs()
    # float zero points: the decomposed uint8 ops round before adding the zero point, so a
    # row is off by up to 1.5 steps (measured 1.47 here), the int4 groups by half a step
    assert bool((lookup_error <= 1.5 * lookup_scales[:, None] + 1e-6).all())
    assert bool((head_error <= head_scales.repeat_interleave(32, dim=1) / 2 + 1e-6).all())


def _values(gm, node):
    return [getattr(gm, a.target) if isinstance(a, torch.fx.Node) else a for a in node.args]


def test_needs_non_static_float_weights_finds_weight_only_linears_only():
    *_, weight_only = _converted(get_weight_only_quantization_config())
    *_, per_token = _converted(get_per_token_quantization_config(4, 32))
    model = LlamaStyleDecoder().eval()
    assert needs_non_static_float_weights(weight_only)
    assert not needs_non_static_float_weights(per_token)  # activations dequantized too
    assert not needs_non_static_float_weights(export_model(model))  # float
    program = torch.export.export(weight_only, model.example_inputs())
    assert needs_non_static_float_weights(program)
