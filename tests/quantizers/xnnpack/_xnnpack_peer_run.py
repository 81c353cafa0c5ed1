"""Running one model through ExecuTorch's XNNPACKQuantizer + torchao's pipeline, or ours.

The zoo parity test (``test_xnnpack_executorch_parity``) and the random-graph differential
test (``test_random_graph_matches_peers``) must run both sides the same way: the same
presets, one calibration (or QAT training) step, the same seed for dropout, and the peer's
conv-bn annotators stubbed out where they cannot match. They share this runner so a change
to the recipe reaches both.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch.fx import GraphModule

#: The ``get_symmetric_quantization_config`` keyword arguments of each preset.
PRESETS = {
    "per_tensor": {},
    "per_channel": {"is_per_channel": True},
    "dynamic": {"is_per_channel": True, "is_dynamic": True},
    "qat": {"is_per_channel": True, "is_qat": True},
}


def skip_peer_conv_bn_annotators(monkeypatch: pytest.MonkeyPatch) -> None:
    """ExecuTorch's conv-bn annotators only match a batch norm, and no graph has one at
    annotation time except a QAT graph of a model with batch norm (PTQ prepare folds it
    first); yet each call pattern-matches a dozen conv-bn graphs. Stubbed where they cannot
    match, to keep the test fast."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils

    for name in ("conv_bn", "conv_bn_relu", "conv_transpose_bn", "conv_transpose_bn_relu"):
        monkeypatch.setitem(xnnpack_quantizer_utils.OP_TO_ANNOTATOR, name, lambda *a: [])


def run_pipeline(
    lib, quantizer, exported: GraphModule, example: tuple, test_input: tuple, to_eval, qat
):
    """Prepare, run ``example`` once (calibration, or a training-mode step for QAT), convert,
    then run ``test_input`` (QAT: after moving the converted model to eval)."""
    prepare = lib.prepare_qat_pt2e if qat else lib.prepare_pt2e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(copy.deepcopy(exported), quantizer)
        torch.manual_seed(1)  # dropout, when a QAT model is run in training mode
        with torch.no_grad():
            prepared(*example)
        converted = lib.convert_pt2e(prepared)
        if qat:
            converted = to_eval(converted)
        with torch.no_grad():
            out = converted(*test_input)
    return converted, torch.utils._pytree.tree_leaves(out)


def run_peer_and_ours(
    peer_quantizer, our_quantizer, exported: GraphModule, example, test_input, peer_to_eval, qat
):
    """:func:`run_pipeline` for ExecuTorch's quantizer through torchao, then for ours through
    pt2e_quant, on one export; returns ``(theirs, theirs_out), (ours, ours_out)``."""
    import pt2e_quant
    from tests.peer_annotation import library

    theirs = run_pipeline(
        library("torchao"), peer_quantizer, exported, example, test_input, peer_to_eval, qat
    )
    ours = run_pipeline(
        library("pt2e_quant"),
        our_quantizer,
        exported,
        example,
        test_input,
        pt2e_quant.move_exported_model_to_eval,
        qat,
    )
    return theirs, ours
