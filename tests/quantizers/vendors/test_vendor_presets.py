"""Each vendor preset through ``quantize(backend=name)`` is the vendor's quantizer through
torchao: the same q/dq op counts and bit-identical outputs on a tiny CNN.

A backend whose vendor package is missing skips with the install command; the Core ML run is
marked slow (its quantizer exports ~400 search patterns while annotating; ``peer_pattern_cache``
keeps the second pipeline from paying that again).
"""

from __future__ import annotations

import pytest
import torch

from tests.quantizers.vendors.pipelines import run_both
from tests.vendors.differential import assert_same_outputs, qdq_counts

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]

CASES = [
    "arm",
    "cadence",
    pytest.param("coreml", marks=pytest.mark.slow),
    "cortex_m",
    "executorch_xnnpack",
    "openvino",
    "qnn",
    "samsung",
    "vulkan",
]


@pytest.mark.parametrize("name", CASES)
def test_preset_matches_the_vendor_quantizer_through_torchao(name: str, peer_pattern_cache) -> None:
    runs = run_both(name)
    ours, theirs = qdq_counts(runs.ours.module), qdq_counts(runs.theirs)
    assert ours == theirs, f"q/dq op counts differ\nours:   {ours}\ntheirs: {theirs}"
    assert sum(n for op, n in ours.items() if "dequantize" in op) > 0
    with torch.no_grad():
        assert_same_outputs(runs.ours.module(*runs.held_out), runs.theirs(*runs.held_out))
    assert runs.ours.backend == name
