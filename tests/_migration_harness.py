"""The two imports of a torchao PT2E tutorial, and how to compare what they produce.

pt2e_quant promises that migrating from torchao is an import change with the same numerics bit
for bit. The tutorial tests (``tests/test_migration_*.py``, one per torchao tutorial) write each
flow once as a function of an :class:`Api` namespace; :func:`peer` fills it from torchao (+
ExecuTorch's XNNPACKQuantizer) exactly as the tutorial imports it and :func:`ours` from
pt2e_quant / quantizers through the README's "Migrating" table, so the two runs differ only in
their imports. :func:`run_both` runs a flow under both, and :func:`assert_same` requires the same
q/dq op counts and ``torch.equal`` outputs. Models stay tiny (the tutorials' own
``Linear(5, 10)`` toy, :class:`TutorialM`, and a few zoo blocks) and both runs see the same
seeds and data (:func:`tutorial_model`, :func:`random_batches`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.graph_check import count_ops
from tests.models import ZOO

Api = SimpleNamespace


# ------------------------------------------------------------------------------ the two imports


def _import_x86_peer():
    """torchao's X86 quantizer module; importing it installs an Inductor pre-grad pass
    globally, which must not leak into other tests."""
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    module = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    inductor_config.pre_grad_custom_pass = before
    return module


def peer(with_xnnpack: bool = False) -> Api:
    """The names as torchao's tutorials import them."""
    pytest.importorskip("torchao")
    pt2e = importlib.import_module("torchao.quantization.pt2e")
    pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
    quantizer = importlib.import_module("torchao.quantization.pt2e.quantizer")
    api = Api(
        name="torchao",
        pt2e=pt2e,
        prepare_pt2e=pipeline.prepare_pt2e,
        prepare_qat_pt2e=pipeline.prepare_qat_pt2e,
        convert_pt2e=pipeline.convert_pt2e,
        quantizer=quantizer,
        observer=importlib.import_module("torchao.quantization.pt2e.observer"),
        xiq=_import_x86_peer(),
    )
    if with_xnnpack:
        pytest.importorskip("executorch")
        xnnpack = importlib.import_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        api.XNNPACKQuantizer = xnnpack.XNNPACKQuantizer
        api.get_symmetric_quantization_config = xnnpack.get_symmetric_quantization_config
    return api


def ours(with_xnnpack: bool = False) -> Api:
    """The same names after the README's import swap."""
    import pt2e_quant
    import pt2e_quant.observer
    import quantizers
    import quantizers.x86_inductor.quantizer

    return Api(
        name="pt2e_quant",
        pt2e=pt2e_quant,
        prepare_pt2e=pt2e_quant.prepare_pt2e,
        prepare_qat_pt2e=pt2e_quant.prepare_qat_pt2e,
        convert_pt2e=pt2e_quant.convert_pt2e,
        quantizer=pt2e_quant,
        observer=pt2e_quant.observer,
        xiq=quantizers.x86_inductor.quantizer,
        XNNPACKQuantizer=quantizers.XNNPACKQuantizer,
        get_symmetric_quantization_config=quantizers.get_symmetric_quantization_config,
    )


# ------------------------------------------------------------------------------------ helpers


class TutorialM(nn.Module):
    """The tutorials' toy model: ``x ─ Linear(in, out) ─ out``."""

    def __init__(self, in_features: int = 5, out_features: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randn(1, self.linear.in_features),)


def tutorial_model(name: str) -> nn.Module:
    """:class:`TutorialM` (``"tutorial_m"``) or a zoo model, built under a fixed seed so both
    libraries start from the same weights."""
    torch.manual_seed(0)
    return TutorialM() if name == "tutorial_m" else ZOO[name]()


def random_batches(example: tuple, count: int, batch: int | None = None) -> list[tuple]:
    """``count`` random batches shaped like ``example`` (optionally with another batch size)."""
    torch.manual_seed(1)

    def one(t: torch.Tensor) -> torch.Tensor:
        shape = t.shape if batch is None else (batch, *t.shape[1:])
        out = torch.randn(shape)
        return out.contiguous(memory_format=torch.channels_last) if out.dim() == 4 else out

    return [tuple(one(t) for t in example) for _ in range(count)]


def qdq_counts(gm: torch.fx.GraphModule) -> dict[str, int]:
    """How many of each ``quantized_decomposed`` op ``gm`` holds: the quantization decisions."""
    return {
        str(op): n for op, n in count_ops(gm).items() if str(op).startswith("quantized_decomposed")
    }


def equal_outputs(a: torch.fx.GraphModule, b: torch.fx.GraphModule, inputs: tuple) -> bool:
    """Whether ``a`` and ``b`` give bit-identical outputs on ``inputs`` (the migration promise)."""
    with torch.no_grad():
        left = torch.utils._pytree.tree_leaves(a(*inputs))
        right = torch.utils._pytree.tree_leaves(b(*inputs))
    return all(torch.equal(x, y) for x, y in zip(left, right, strict=True))


def run_both(program: Callable[[Api], torch.fx.GraphModule], with_xnnpack: bool = False):
    """``(program(peer()), program(ours()))``, with the peers' deprecation noise silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return program(peer(with_xnnpack)), program(ours(with_xnnpack))


def assert_same(theirs, mine, inputs: tuple) -> None:
    """Same q/dq ops (and some at all, so the check is not vacuous) and bit-equal outputs."""
    assert qdq_counts(mine) == qdq_counts(theirs)
    assert qdq_counts(mine), "nothing was quantized: the comparison would be vacuous"
    assert equal_outputs(theirs, mine, inputs)
