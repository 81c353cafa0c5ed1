"""Differential tests: the same annotation through torchao's prepare/convert and ours.

For every zoo model both pipelines must produce the same q/dq structure (op counts and order)
and bit-identical outputs on the same calibration data.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tests.graph_check import qdq_and_compute_ops
from tests.models import ZOO
from tests.peer_annotation import library, make_int8_quantizer

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")


def _run_pipeline(
    lib_name: str, model: torch.nn.Module, calibration: list[tuple], per_channel: bool
):
    lib = library(lib_name)
    exported = torch.export.export(copy.deepcopy(model), calibration[0]).module()
    prepared = lib.prepare_pt2e(exported, make_int8_quantizer(lib, per_channel))
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return lib.convert_pt2e(prepared)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_same_structure_and_bit_identical_outputs(name: str, per_channel: bool) -> None:
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    example = model.example_inputs()
    calibration = [example] + [
        tuple(torch.randn_like(t) if t.is_floating_point() else t for t in example)
        for _ in range(2)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _run_pipeline("torchao", model, calibration, per_channel)
        ours = _run_pipeline("pt2e_quant", model, calibration, per_channel)
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    test_input = calibration[-1]
    with torch.no_grad():
        ours_out, theirs_out = ours(*test_input), theirs(*test_input)
    ours_flat = torch.utils._pytree.tree_leaves(ours_out)
    theirs_flat = torch.utils._pytree.tree_leaves(theirs_out)
    assert all(torch.equal(a, b) for a, b in zip(ours_flat, theirs_flat, strict=True))
