"""prepare and calibration copy no weight, and convert adds only the integer weights: what makes
quantizing a 1B-parameter model cost no more memory than its quantized weights
(benchmarks/bench_llm.py measures the bytes; these tests pin the mechanism)."""

from __future__ import annotations

import pytest
import torch

import pt2e_quant
from quantizers import (
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_symmetric_quantization_config,
)
from tests.models.zoo_decoder import LlamaStyleDecoder

CONFIGS = {
    "8da4w": lambda: get_per_token_quantization_config(4, 32),
    "8da8w": lambda: get_per_token_quantization_config(8, None),
    "static per-channel": lambda: get_symmetric_quantization_config(is_per_channel=True),
}


def _storages(module: torch.nn.Module) -> dict[int, str]:
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    return {t.untyped_storage().data_ptr(): name for name, t in tensors.items() if t.numel() > 1}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_prepare_and_calibration_share_every_weight_and_convert_adds_only_integers(config):
    torch.manual_seed(0)
    model = LlamaStyleDecoder(vocab=256, dim=64, layers=2, hidden=128).eval()
    example = model.example_inputs()
    exported = torch.export.export(model, example).module()
    original = _storages(exported)
    snapshot = {n: p.detach().clone() for n, p in exported.named_parameters()}
    prepared = pt2e_quant.prepare_pt2e(exported, XNNPACKQuantizer().set_global(CONFIGS[config]()))
    prepared(*example)
    prepared(*example)
    weights = {ptr for ptr in _storages(prepared) if ptr in original}
    float_weights = {name for name, p in exported.named_parameters() if p.dim() == 2}
    assert float_weights, "the decoder has weights"
    # every 2-D weight the prepared model reads is the exported model's own storage
    prepared_2d = {p.untyped_storage().data_ptr() for p in prepared.parameters() if p.dim() == 2}
    assert prepared_2d and prepared_2d <= weights
    converted = pt2e_quant.convert_pt2e(prepared)
    added = [
        (name, t)
        for name, t in converted.state_dict(keep_vars=True).items()
        if t.untyped_storage().data_ptr() not in original and t.numel() > 1
    ]
    # new storage: integer weights, and their (small) scales / zero points
    integers = [t for _, t in added if not t.is_floating_point()]
    assert integers, f"{config}: convert stored no integer weight"
    big_floats = [
        name for name, t in added if t.is_floating_point() and t.dim() == 2 and t.shape[1] >= 32
    ]
    assert not big_floats, f"{config}: convert copied float weights {big_floats}"
    for name, p in exported.named_parameters():
        assert torch.equal(p, snapshot[name]), f"{name} was written"
