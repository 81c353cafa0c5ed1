"""Run one random model through our pipeline and its peer's, and say what differs.

The random-graph differential's verdict for one (backend, preset, seed): ours is
XNNPACKQuantizer / X86InductorQuantizer + pt2e_quant's prepare / convert, the peer is
ExecuTorch's XNNPACKQuantizer / torchao's X86InductorQuantizer + torchao's. Both must prepare
(or both fail), hold the same q/dq op counts after convert and give bit-identical outputs on
the same data. The runners are the zoo parity tests' (``_xnnpack_peer_run``,
``_x86_inductor_peer_run``), so a random model goes through exactly the flow the zoo
differentials check.
"""

from __future__ import annotations

import collections
import copy
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import qdq_and_compute_ops
from tests.peer_annotation import library
from tests.quantizers._random_graph_generator import RandomGraph
from tests.quantizers.x86_inductor import _x86_inductor_peer_run as x86_run
from tests.quantizers.xnnpack import _xnnpack_peer_run as xnnpack_run

QD = "quantized_decomposed."


@dataclass
class Outcome:
    """What one pipeline made of one model: the error, or q/dq counts and outputs."""

    error: str | None = None
    qdq: collections.Counter | None = None
    outputs: list[Tensor] | None = None


XNNPACK_PRESETS = ("per_tensor", "per_channel", "dynamic", "qat")
X86_PRESETS = ("static", "qat", "dynamic")


def _qdq_counts(gm) -> collections.Counter:
    return collections.Counter(n for n in qdq_and_compute_ops(gm) if n.startswith(QD))


def _xnnpack(ours: bool, model: RandomGraph, preset: str, strict: bool = False) -> Outcome:
    """One model through ExecuTorch's quantizer + torchao's pipeline, or ours + ours, with
    the runner the zoo parity test uses (one calibration / training step, then ``test_input``)."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer
    from torchao.quantization.pt2e import move_exported_model_to_eval as peer_to_eval

    import pt2e_quant

    qat = preset == "qat"
    kwargs = xnnpack_run.PRESETS[preset]
    torch.manual_seed(model.seed)
    example, test_input = model.example_inputs(), model.example_inputs()
    exported = torch.export.export(model.train(qat), example, strict=strict).module()
    if ours:
        lib, to_eval = library("pt2e_quant"), pt2e_quant.move_exported_model_to_eval
        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**kwargs))
    else:
        lib, to_eval = library("torchao"), peer_to_eval
        config = peer.get_symmetric_quantization_config(**kwargs)
        quantizer = peer.XNNPACKQuantizer().set_global(config)
    try:
        converted, out = xnnpack_run.run_pipeline(
            lib, quantizer, exported, example, test_input, to_eval, qat
        )
    except Exception as error:  # noqa: BLE001 - a crash is an outcome to compare
        return Outcome(error=f"{type(error).__name__}: {error}")
    return Outcome(qdq=_qdq_counts(converted), outputs=out)


def _x86(ours: bool, model: RandomGraph, preset: str, strict: bool = False) -> Outcome:
    """One model through torchao's X86InductorQuantizer + pipeline, or ours + ours, with
    the runner the zoo parity test uses (three calibration batches, QAT in training mode)."""
    torch.manual_seed(model.seed)
    example = model.example_inputs()
    calibration = [example] + [model.example_inputs() for _ in range(2)]
    model.train(preset == "qat")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = x86_run.run_pipeline(ours, model, calibration, preset, strict=strict)
            with torch.no_grad():
                out = torch.utils._pytree.tree_leaves(converted(*calibration[-1]))
    except Exception as error:  # noqa: BLE001 - a crash is an outcome to compare
        return Outcome(error=f"{type(error).__name__}: {error}")
    return Outcome(qdq=_qdq_counts(converted), outputs=out)


RUNNERS = {"xnnpack": _xnnpack, "x86": _x86}


def compare(backend: str, preset: str, seed: int, peer_strict: bool = False) -> str | None:
    """None when ours and the peer agree on ``RandomGraph(seed)``, else what differs.

    Both run on the non-strict export (the default), unless ``peer_strict``: then the peer
    runs on the strict export, the same aten ops with the ``source_fn_stack`` metadata the
    peers match on (non-strict export records none).
    """
    model = RandomGraph(seed)
    theirs = RUNNERS[backend](False, copy.deepcopy(model), preset, peer_strict)
    ours = RUNNERS[backend](True, copy.deepcopy(model), preset)
    if theirs.error is not None or ours.error is not None:
        if theirs.error is not None and ours.error is not None:
            return None
        if ours.error is not None:
            return f"only ours fails: {ours.error}"
        return f"only the peer fails: {theirs.error}"
    if ours.qdq != theirs.qdq:
        return f"q/dq counts differ: ours {dict(ours.qdq)}, peer {dict(theirs.qdq)}"
    if not all(torch.equal(a, b) for a, b in zip(ours.outputs, theirs.outputs, strict=True)):
        return "outputs differ"
    return None
