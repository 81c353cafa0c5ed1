"""The zoo's Llama-style decoder (tests/models/zoo_decoder.py) has the LLM graph features the
quantization schemes for LLMs are tested on: it exports, and its exported graph keeps SDPA,
grouped-query projections, rotary arithmetic and one weight shared by embedding and lm_head."""

from __future__ import annotations

import pytest
import torch

from tests.models import export_model
from tests.models.zoo_decoder import LlamaStyleDecoder

aten = torch.ops.aten


def test_exported_decoder_computes_what_the_model_computes():
    torch.manual_seed(0)
    model = LlamaStyleDecoder().eval()
    (ids,) = model.example_inputs()
    gm = export_model(model)
    expected = model(ids)
    assert expected.shape == (1, model.tokens, model.vocab)
    torch.testing.assert_close(gm(ids), expected, rtol=0, atol=1e-6)


def test_graph_has_sdpa_gqa_rotary_and_a_tied_head():
    model = LlamaStyleDecoder(layers=2, heads=4, kv_heads=2)
    assert model.lm_head.weight is model.embed_tokens.weight
    gm = export_model(model)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(aten.scaled_dot_product_attention.default) == 2
    assert targets.count(aten.linear.default) == 2 * 7 + 1  # q k v o gate up down, lm_head
    assert aten.embedding.default in targets and aten.rsqrt.default in targets
    shapes = {
        str(n.target): tuple(n.meta["val"].shape) for n in gm.graph.nodes if n.op == "get_attr"
    }
    assert shapes["layers.0.attention.k_proj.weight"] == (32, 64)  # 2 kv heads of 16
    assert shapes["layers.0.attention.q_proj.weight"] == (64, 64)
    # export keeps one name for the shared tensor (lm_head.weight) and reads it for both ops
    shared = [
        n
        for n in gm.graph.nodes
        if n.op == "get_attr"
        and {aten.embedding.default, aten.linear.default} <= {u.target for u in n.users}
    ]
    assert len(shared) == 1


def test_bad_head_layout_is_refused():
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        LlamaStyleDecoder(heads=4, kv_heads=3)
