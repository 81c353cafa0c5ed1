"""torchao's "PyTorch 2 Export Post Training Quantization" tutorial, migrated.

pt2e_quant_ptq.rst is the first program most users copy: XNNPACKQuantizer with
get_symmetric_quantization_config(), prepare_pt2e, calibrate, convert_pt2e, then save and load the
quantized model. After the README's import swap it must produce the same q/dq ops and bit-equal
outputs (static and dynamic batch dim), survive torch.export save / load, and fail on the
tutorial's one broken snippet exactly as the peer does.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from tests._migration_harness import (
    Api,
    assert_same,
    equal_outputs,
    ours,
    peer,
    qdq_counts,
    random_batches,
    run_both,
    tutorial_model,
)

pytestmark = pytest.mark.torchao


def ptq_tutorial(api: Api, model: nn.Module, calibration: list[tuple], dynamic: bool):
    """pt2e_quant_ptq.rst: export (optionally with a dynamic batch dim), XNNPACKQuantizer with
    get_symmetric_quantization_config(), prepare_pt2e, calibrate, convert_pt2e."""
    example_inputs = calibration[0]
    dynamic_shapes = None
    if dynamic:
        dynamic_shapes = tuple(
            {0: torch.export.Dim("dim")} if i == 0 else None for i in range(len(example_inputs))
        )
    exported_model = torch.export.export(
        copy.deepcopy(model).eval(), example_inputs, dynamic_shapes=dynamic_shapes
    ).module()
    quantizer = api.XNNPACKQuantizer()
    quantizer.set_global(api.get_symmetric_quantization_config())
    prepared_model = api.prepare_pt2e(exported_model, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared_model(*batch)
    return api.convert_pt2e(prepared_model)


@pytest.mark.executorch
@pytest.mark.parametrize(
    ("name", "dynamic"),
    [("tutorial_m", False), ("mobilenet_v2_block", True)],
)
def test_ptq_tutorial_xnnpack(name: str, dynamic: bool, peer_pattern_cache) -> None:
    model = tutorial_model(name)
    calibration = random_batches(model.example_inputs(), 3, batch=2)
    theirs, mine = run_both(lambda api: ptq_tutorial(api, model, calibration, dynamic), True)
    test_input = random_batches(model.example_inputs(), 1, batch=3 if dynamic else 2)[0]
    assert_same(theirs, mine, test_input)


def test_ptq_tutorial_save_and_load_round_trip() -> None:
    """The tutorial's "Save and Load" section: re-export the converted model, torch.export.save,
    load, and get the same outputs (ours, with our own XNNPACK quantizer)."""
    model = tutorial_model("tutorial_m")
    calibration = random_batches(model.example_inputs(), 2)
    quantized_model = ptq_tutorial(ours(), model, calibration, dynamic=False)
    example_inputs = calibration[0]
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(quantized_model, example_inputs), buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    assert qdq_counts(loaded) == qdq_counts(quantized_model)
    assert equal_outputs(loaded, quantized_model, example_inputs)


@pytest.mark.executorch
def test_ptq_tutorial_set_object_type_snippet_fails_on_both() -> None:
    """The tutorial lists ``quantizer.set_object_type(torch.nn.Conv2d, ...)``; neither
    ExecuTorch's XNNPACKQuantizer nor ours has it (theirs and ours spell it set_module_type /
    set_operator_type). A documentation bug, not a migration difference."""
    for api in (peer(with_xnnpack=True), ours()):
        quantizer = api.XNNPACKQuantizer()
        with pytest.raises(AttributeError, match="set_object_type"):
            quantizer.set_object_type(nn.Conv2d, api.get_symmetric_quantization_config())
