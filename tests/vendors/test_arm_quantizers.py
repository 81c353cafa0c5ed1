"""Arm's quantizers from ExecuTorch through pt2e_quant against torchao: ``TOSAQuantizer`` (int8,
and a16w8: 16-bit activations with int8 weights) and ``CortexMQuantizer``.

For every (configuration, model) both pipelines get the same export and calibration
(``differential.compare``) and must give the same q/dq op counts and bit-identical outputs.
Their converted modules then lower through the vendor's backend the same way:

* TOSA: ``TOSAPartitioner`` takes the whole quantized body into one delegate, leaving only the
  input quantize and the output dequantize outside, and serialises the same TOSA flatbuffer,
  byte for byte. The TOSA reference model runs it within one output step of our converted
  module; a16w8 on the transformer is the one exception, see
  :func:`test_tosa_reference_model_runs_our_lowering`.
* Cortex-M: the pass manager turns both into the same ``cortex_m`` ops, which run on the host
  to the same output, within one output step of our converted module. Cortex-M quantizes a
  convolution only with a channels-last input, so the CNNs also run channels-last.

Vendor limits that hit torchao's pipeline as well as ours are pinned as such: the Cortex-M
pass manager cannot lower the transformer's quantized ``bmm`` in either.

::

    zoo model ─ export ─┬─ torchao prepare/calibrate/convert ─ lower ─┐  same counts, outputs,
                        └─ ours    prepare/calibrate/convert ─ lower ─┘  bytes, runs
"""

from __future__ import annotations

import functools
from collections import Counter

import pytest
import torch

from tests.vendors._lowering import delegates, lower_cortex_m, lower_tosa, lowered_counts
from tests.vendors._overlay import require_vendor
from tests.vendors._torchao_baseline import output_step
from tests.vendors.differential import CNN_AND_TRANSFORMER, Differential, compare
from tests.vendors.test_cortex_m_environment import cortex_m_quantizer
from tests.vendors.test_tosa_environment import PRESETS, tosa_quantizer

pytestmark = [pytest.mark.vendor, pytest.mark.torchao]

#: a channels-last model is named "<zoo name>:channels_last"
CHANNELS_LAST = ("tiny_resnet:channels_last", "tiny_mobilenet_v2:channels_last")
#: the margin on "within one step": the step is a float32 scale, the difference a float32
STEP_MARGIN = 1.0001


@functools.cache
def tosa_differential(preset: str, model: str) -> Differential:
    # Arm's transform_for_annotation rejects the export guard's call_module
    return compare(lambda: tosa_quantizer(preset), model, check_guards=False)


@functools.cache
def cortex_m_differential(model: str) -> Differential:
    name, _, layout = model.partition(":")
    return compare(
        cortex_m_quantizer, name, check_guards=False, channels_last=layout == "channels_last"
    )


def dequantize_per_channel_count(differential: Differential) -> int:
    return differential.ours.counts["quantized_decomposed.dequantize_per_channel.default"]


# ------------------------------------------------------------------------------ TOSA


@pytest.mark.slow
@pytest.mark.parametrize("model", CNN_AND_TRANSFORMER)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_tosa_quantizer_matches_torchao(preset: str, model: str) -> None:
    """Same q/dq counts (the transformer's decomposed layer norms quantize their weight and
    bias twice, and torchao keeps the second quantize: regression for folding through a
    dequantize) and bit-identical outputs."""
    differential = tosa_differential(preset, model)
    differential.assert_same()
    assert dequantize_per_channel_count(differential) > 0  # per-channel int8 weights


def tosa_operators(flatbuffer: bytes) -> Counter:
    """TOSA operators of a serialised TOSA graph, by name (``CONV2D``, ``TABLE``, ...)."""
    graph = require_vendor("tosa.TosaGraph").TosaGraph.GetRootAs(flatbuffer, 0)
    op_names = {
        value: name
        for name, value in vars(require_vendor("tosa.Op").Op).items()
        if not name.startswith("_")
    }
    operators: Counter = Counter()
    for r in range(graph.RegionsLength()):
        region = graph.Regions(r)
        for b in range(region.BlocksLength()):
            block = region.Blocks(b)
            for o in range(block.OperatorsLength()):
                operators[op_names[block.Operators(o).Op()]] += 1
    return operators


@functools.cache
def tosa_lowerings(preset: str, model: str) -> tuple:
    differential = tosa_differential(preset, model)
    spec = PRESETS[preset][0]
    return tuple(
        lower_tosa(outcome.converted, differential.example, spec)
        for outcome in (differential.theirs, differential.ours)
    )


#: every preset on the CNN; the transformer (~25 s a lowering) with a16w8 only, the preset
#: whose int16 activations need the reference model's TABLE tolerance below
LOWERED = [(p, "tiny_resnet") for p in PRESETS] + [("a16w8", "transformer_encoder_block")]


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.parametrize(("preset", "model"), LOWERED)
def test_tosa_partitioner_lowers_ours_like_torchao(preset: str, model: str) -> None:
    """One delegate holding everything but the input quantize and output dequantize, and the
    same TOSA flatbuffer: the backend cannot tell the two converted modules apart."""
    theirs, ours = tosa_lowerings(preset, model)
    expected = Counter(
        {
            "executorch_call_delegate": 1,
            "quantized_decomposed.quantize_per_tensor.default": 1,
            "quantized_decomposed.dequantize_per_tensor.default": 1,
        }
    )
    assert lowered_counts(theirs) == expected
    assert lowered_counts(ours) == expected
    (their_delegate,) = delegates(theirs)
    (our_delegate,) = delegates(ours)
    assert our_delegate.processed_bytes == their_delegate.processed_bytes


#: (preset, model) -> (output steps the reference model may differ by, int16 TABLE operators)
REFERENCE_TOLERANCE = {("a16w8", "transformer_encoder_block"): (4, 5)}


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.parametrize(("preset", "model"), LOWERED)
def test_tosa_reference_model_runs_our_lowering(preset: str, model: str) -> None:
    """The TOSA reference model runs our lowering to torchao's lowering's output exactly, and
    within one output step of our converted module.

    Except a16w8 on the transformer (up to 4 steps, on 26 of its 256 outputs): its rsqrt (two
    layer norms), exp and reciprocal (softmax) and GELU lower to five int16 ``TABLE``
    operators, which interpolate a 513-entry table instead of computing the function. An int8
    ``TABLE`` has an entry per input value, so it is exact, and int8 stays within one step.
    """
    differential = tosa_differential(preset, model)
    theirs, ours = tosa_lowerings(preset, model)
    runner = require_vendor("executorch.backends.arm.test.runner_utils")
    with runner.TosaReferenceModelDispatch() as dispatch:
        our_run = ours.module()(*differential.example)
        their_run = theirs.module()(*differential.example)
    assert dispatch.ran_tosa_dispatch
    assert torch.equal(our_run, their_run)

    steps, tables = REFERENCE_TOLERANCE.get((preset, model), (1, None))
    if tables is not None:
        (delegate,) = delegates(ours)
        assert tosa_operators(delegate.processed_bytes)["TABLE"] == tables
    expected = differential.ours.converted(*differential.example)
    step = output_step(differential.ours.converted)
    assert (our_run - expected).abs().max().item() <= steps * step * STEP_MARGIN


# -------------------------------------------------------------------------- Cortex-M


@pytest.mark.parametrize("model", CNN_AND_TRANSFORMER + CHANNELS_LAST)
def test_cortex_m_quantizer_matches_torchao(model: str) -> None:
    """Same q/dq counts and bit-identical outputs; in channels-last the convolutions take
    per-channel weights (contiguous, they stay float, in both pipelines)."""
    differential = cortex_m_differential(model)
    differential.assert_same()
    assert (dequantize_per_channel_count(differential) > 0) == model.endswith("channels_last")


@functools.cache
def cortex_m_lowerings(model: str) -> tuple:
    differential = cortex_m_differential(model)
    return tuple(
        lower_cortex_m(outcome.converted, differential.example)
        for outcome in (differential.theirs, differential.ours)
    )


#: what the pass manager makes of each channels-last CNN (besides its memory.alloc calls)
CORTEX_M_OPS = {
    "tiny_resnet:channels_last": {"quantized_conv2d": 9, "quantized_add": 3, "quantized_linear": 1},
    "tiny_mobilenet_v2:channels_last": {
        "quantized_conv2d": 8,
        "quantized_depthwise_conv2d": 3,
        "quantized_add": 2,
        "quantized_linear": 1,
    },
}


@pytest.mark.slow
@pytest.mark.executorch
@pytest.mark.parametrize("model", CHANNELS_LAST)
def test_cortex_m_pass_manager_lowers_ours_like_torchao(model: str) -> None:
    """The same ``cortex_m`` ops, no decomposed q/dq left; on the host, the same output as
    torchao's lowering and within one output step of our converted module."""
    differential = cortex_m_differential(model)
    theirs, ours = cortex_m_lowerings(model)
    counts = lowered_counts(ours)
    assert counts == lowered_counts(theirs)
    for op, count in CORTEX_M_OPS[model].items():
        assert counts[f"cortex_m.{op}.default"] == count, op
    assert counts["cortex_m.quantize_per_tensor.default"] == 1  # the input
    assert counts["cortex_m.dequantize_per_tensor.default"] == 1  # the output
    assert not [op for op in counts if op.startswith("quantized_decomposed.")], counts

    our_run = ours.module()(*differential.example)
    assert torch.equal(our_run, theirs.module()(*differential.example))
    expected = differential.ours.converted(*differential.example)
    step = output_step(differential.ours.converted)
    assert (our_run - expected).abs().max().item() <= step * STEP_MARGIN


def error_chain(error: BaseException | None) -> list[str]:
    """An exception's message and those of its causes, outermost first."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return messages


@pytest.mark.slow
@pytest.mark.executorch
def test_cortex_m_pass_manager_fails_alike_on_the_transformer() -> None:
    """The pass manager cannot lower the transformer's quantized ``bmm`` (its meta check finds
    an int32 operand where it wants int8) from torchao's converted module either: the same
    errors, so it is the vendor's limit, not ours."""
    differential = cortex_m_differential("transformer_encoder_block")
    chains = []
    for outcome in (differential.theirs, differential.ours):
        with pytest.raises(Exception, match="ReplaceScalarWithTensorArgPass") as failure:
            lower_cortex_m(outcome.converted, differential.example)
        chains.append(error_chain(failure.value))
    assert chains[0] == chains[1]
    assert any("expected scalar type torch.int8 but found torch.int32" in m for m in chains[1])
