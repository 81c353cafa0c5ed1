"""QuantizationConfig's spec readers (torchao's ``get_*_qspec``), which custom annotators use."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pt2e_quant import SpecError
from quantizers import (
    get_bias_qspec,
    get_default_x86_inductor_quantization_config,
    get_input_act_qspec,
    get_output_act_qspec,
    get_symmetric_quantization_config,
    get_weight_qspec,
)

READERS = {
    "input_activation": get_input_act_qspec,
    "output_activation": get_output_act_qspec,
    "weight": get_weight_qspec,
    "bias": get_bias_qspec,
}

CONFIGS = {
    "xnnpack_per_channel": lambda: get_symmetric_quantization_config(is_per_channel=True),
    "xnnpack_dynamic": lambda: get_symmetric_quantization_config(is_dynamic=True),
    "x86": get_default_x86_inductor_quantization_config,
    "x86_qat": lambda: get_default_x86_inductor_quantization_config(is_qat=True),
}


@pytest.mark.parametrize("preset", sorted(CONFIGS))
def test_each_reader_returns_its_role_field(preset: str) -> None:
    config = CONFIGS[preset]()
    for role, reader in READERS.items():
        assert reader(config) is getattr(config, role)
        assert reader(None) is None


@pytest.mark.parametrize("role", ["input_activation", "output_activation"])
def test_per_channel_activation_specs_are_rejected_naming_the_role(role: str) -> None:
    config = get_symmetric_quantization_config()
    spec = dataclasses.replace(getattr(config, role), qscheme=torch.per_channel_affine, ch_axis=1)
    with pytest.raises(SpecError, match=f"QuantizationConfig.{role} uses qscheme"):
        READERS[role](dataclasses.replace(config, **{role: spec}))


def test_affine_weight_spec_is_rejected() -> None:
    config = get_symmetric_quantization_config()
    spec = dataclasses.replace(config.weight, qscheme=torch.per_tensor_affine)
    with pytest.raises(SpecError, match="QuantizationConfig.weight uses qscheme"):
        get_weight_qspec(dataclasses.replace(config, weight=spec))


def test_non_float_bias_spec_is_rejected() -> None:
    config = get_symmetric_quantization_config()
    spec = dataclasses.replace(config.weight, dtype=torch.int32)
    with pytest.raises(SpecError, match="only a float bias spec"):
        get_bias_qspec(dataclasses.replace(config, bias=spec))


@pytest.mark.torchao
def test_readers_accept_and_reject_what_torchao_does() -> None:
    """Same answers as torchao's readers on its own config type, for the same specs."""
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.quantizer import utils as peer

    ours = get_symmetric_quantization_config(is_per_channel=True)
    peer_config = peer.QuantizationConfig(
        ours.input_activation, ours.output_activation, ours.weight, ours.bias, ours.is_qat
    )
    for name, reader in READERS.items():
        peer_reader = getattr(peer, reader.__name__)
        assert reader(ours) is peer_reader(peer_config), name
    affine_weight = dataclasses.replace(ours.weight, qscheme=torch.per_tensor_affine)
    with pytest.raises(ValueError):
        peer.get_weight_qspec(dataclasses.replace(peer_config, weight=affine_weight))
    with pytest.raises(ValueError):
        get_weight_qspec(dataclasses.replace(ours, weight=affine_weight))
