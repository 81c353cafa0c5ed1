"""Checkpointing a prepared model: calibrate or train in one process, convert in another.

A prepared model's ``state_dict`` (weights, observer statistics, fake-quant state, QAT batch
norm statistics) loads into a fresh ``prepare_pt2e`` / ``prepare_qat_pt2e`` of the same model
with the same quantizer, and converting either gives the same model bit for bit. That needs
observer names that are the same on every prepare and observers whose statistics live in
buffers (the histogram's range included), not in Python attributes.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.models import ZOO

MODELS = ("mobilenet_v3_block", "transformer_encoder_block")


def _prepare(name: str, qat: bool) -> tuple[GraphModule, tuple]:
    torch.manual_seed(0)
    model = ZOO[name]()
    model = model.train() if qat else model.eval()
    example = model.example_inputs()
    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=qat)
    quantizer = XNNPACKQuantizer().set_global(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model, example).module()
        prepare = prepare_qat_pt2e if qat else prepare_pt2e
        return prepare(exported, quantizer), example


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer)


@pytest.mark.parametrize("qat", [False, True], ids=["ptq", "qat"])
@pytest.mark.parametrize("name", MODELS)
def test_prepared_state_dict_restores_into_a_fresh_prepare(name: str, qat: bool) -> None:
    calibrated, example = _prepare(name, qat)
    torch.manual_seed(1)
    for _ in range(3):
        calibrated(*(torch.randn_like(t) if t.is_floating_point() else t for t in example))
    restored, _ = _prepare(name, qat)
    result = restored.load_state_dict(_round_trip(calibrated.state_dict()))
    assert not result.missing_keys and not result.unexpected_keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, got = convert_pt2e(calibrated), convert_pt2e(restored)
    with torch.no_grad():
        assert torch.equal(got(*example), expected(*example))


def test_an_uncalibrated_fresh_prepare_converts_differently() -> None:
    """The check above can fail: without the loaded statistics the converted model differs."""
    calibrated, example = _prepare("mobilenet_v3_block", qat=False)
    calibrated(*(t * 4 for t in example))
    fresh, _ = _prepare("mobilenet_v3_block", qat=False)
    fresh(*example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, got = convert_pt2e(calibrated), convert_pt2e(fresh)
    with torch.no_grad():
        assert not torch.equal(got(*example), expected(*example))
