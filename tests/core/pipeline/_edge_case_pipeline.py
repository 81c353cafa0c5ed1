"""The pipeline runner and comparisons the edge-case tests (``test_edge_*.py``) share.

Each edge-case file quantizes a tiny model end to end through a real backend quantizer and
then checks one defined behaviour; this module holds what all of them need so that every
file runs the pipeline, compares outputs and checks "the user's module was left alone" the
same way.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.fx import GraphModule

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops import qdq_ops
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

Q, DQ = qdq_ops.QUANTIZE_PER_TENSOR, qdq_ops.DEQUANTIZE_PER_TENSOR
DQ_CH = qdq_ops.DEQUANTIZE_PER_CHANNEL


def xnnpack_quantizer() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def x86_quantizer() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


#: The backends every edge case runs through, by the name used in test ids.
QUANTIZERS: dict[str, Callable] = {"xnnpack": xnnpack_quantizer, "x86": x86_quantizer}


def run_pipeline(
    gm: GraphModule, quantizer, calibration: list[tuple], kwargs: dict | None = None
) -> GraphModule:
    """prepare_pt2e, calibrate on every batch of ``calibration``, convert_pt2e."""
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch, **(kwargs or {}))
    return convert_pt2e(prepared)


def _leaves(out) -> list[Tensor]:
    return torch.utils._pytree.tree_leaves(out)


def all_equal(a, b) -> bool:
    """Same output structure and every leaf bit-identical."""
    left, right = _leaves(a), _leaves(b)
    return len(left) == len(right) and all(
        torch.equal(x, y) for x, y in zip(left, right, strict=True)
    )


def close_within(a, b, atol: float) -> bool:
    """Quantized vs float outputs: same structure, every float leaf within ``atol``."""
    left, right = _leaves(a), _leaves(b)
    return len(left) == len(right) and all(
        (x.float() - y.float()).abs().max() <= atol for x, y in zip(left, right, strict=True)
    )


def sqnr(quantized: Tensor, reference: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (int8 models of these sizes reach 20-40)."""
    quantized, reference = quantized.detach().float(), reference.detach().float()
    return float(20 * torch.log10(reference.norm() / (quantized - reference).norm()))


def snapshot(gm: GraphModule) -> tuple:
    """What a pipeline call must leave unchanged on the user's exported module."""
    return (
        gm.code,
        [(n.name, sorted(n.meta)) for n in gm.graph.nodes],
        sorted(name for name, _ in gm.named_modules()),
        sorted(vars(gm)),
        {k: v.clone() for k, v in gm.state_dict(keep_vars=True).items()},
    )


def assert_untouched(gm: GraphModule, before: tuple) -> None:
    """``gm`` still matches the :func:`snapshot` taken before the pipeline call."""
    after = snapshot(gm)
    assert after[:4] == before[:4]
    assert after[4].keys() == before[4].keys()
    assert all(torch.equal(after[4][k], before[4][k]) for k in before[4]), "tensors changed"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings a test does not check (uncalibrated observers, peers' noise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
