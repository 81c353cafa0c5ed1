"""``--pte`` for the vendor backends whose partitioner runs here without a vendor SDK.

The program ``quantize(backend=name)`` converted lowers with that backend's partitioner
(``quantizers.vendors.<name>.partitioner``, the one its ``write_pte`` uses) to the same
delegated / undelegated op counts as the vendor's quantizer run through torchao; the XNNPACK
``.pte`` runs in ExecuTorch's Python runtime and matches our converted module.
"""

from __future__ import annotations

import collections
import importlib
import operator
from pathlib import Path

import pytest
import torch

from pt2e_quant.contract.backends import get_backend
from quantizers.vendors.lowering import lower
from tests.quantizers.vendors.pipelines import run_both

pytestmark = [pytest.mark.vendor, pytest.mark.torchao, pytest.mark.executorch]

DELEGATE = "executorch_call_delegate"

#: backend -> (delegate calls, ops left outside the delegates) in the lowered VendorCNN
EXPECTED = {
    # the whole graph, q/dq included, is one XNNPACK subgraph
    "executorch_xnnpack": (1, {}),
    # weight-only linear and the float ops around it: all one Vulkan subgraph
    "vulkan": (1, {}),
    # the TOSA subgraph starts after the input's quantize and ends before the output's dequantize
    "arm": (1, {"quantize_per_tensor": 1, "dequantize_per_tensor": 1}),
}


def _lowered_counts(graph: torch.fx.Graph) -> tuple[int, dict[str, int]]:
    delegates, others = 0, collections.Counter()
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name = str(getattr(node.target, "__name__", node.target))
        if DELEGATE in name:
            delegates += 1
        else:
            others[name.split(".")[-2] if "." in name else name] += 1
    return delegates, dict(others)


def _partitioner(name: str):
    """The backend's partitioner; ExecuTorch's XNNPACK one for ``executorch_xnnpack``, whose
    ``write_pte`` is the ``xnnpack`` backend's."""
    if name == "executorch_xnnpack":
        xnnpack = importlib.import_module(
            "executorch.backends.xnnpack.partition.xnnpack_partitioner"
        )
        return xnnpack.XnnpackPartitioner()
    return importlib.import_module(f"quantizers.vendors.{name}").partitioner()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_ours_lowers_like_torchaos(name: str) -> None:
    runs = run_both(name)
    ours = lower(name, runs.ours.exported_program, _partitioner(name))
    theirs = lower(name, runs.theirs_program, _partitioner(name))
    counts = _lowered_counts(ours.exported_program().graph)
    assert counts == _lowered_counts(theirs.exported_program().graph)
    assert counts == EXPECTED[name]


def test_the_xnnpack_pte_runs_and_matches_the_converted_module(tmp_path: Path) -> None:
    runs = run_both("executorch_xnnpack")
    runtime = pytest.importorskip("executorch.runtime")
    path = tmp_path / "model.pte"
    get_backend("executorch_xnnpack").write_pte(runs.ours.exported_program, path)
    program = runtime.Runtime.get().load_program(path)
    (output,) = program.load_method("forward").execute(list(runs.held_out))
    with torch.no_grad():
        expected = runs.ours.module(*runs.held_out)
    # Here they agree exactly; XNNPACK's int8 kernels may round a requantization differently
    # on another CPU, so one step of the output's int8 scale (0.0039 here) is allowed.
    torch.testing.assert_close(output, expected, atol=0.004, rtol=0)


@pytest.mark.parametrize("name", ["vulkan", "arm"])
def test_write_pte_writes_the_lowered_program(name: str, tmp_path: Path) -> None:
    runs = run_both(name)
    path = tmp_path / "model.pte"
    get_backend(name).write_pte(runs.ours.exported_program, path)
    assert path.read_bytes()[4:8] == b"ET12"  # the ExecuTorch program flatbuffer's identifier


@pytest.mark.slow
def test_coreml_lowers_like_torchaos_where_coremltools_converts(peer_pattern_cache) -> None:
    runs = run_both("coreml")
    try:
        theirs = lower("coreml", runs.theirs_program, _partitioner("coreml"))
    except Exception as error:  # coremltools' converter, not ours: the same program fails
        pytest.skip(f"coremltools cannot convert torchao's program here either: {error}")
    ours = lower("coreml", runs.ours.exported_program, _partitioner("coreml"))
    counts = _lowered_counts(ours.exported_program().graph)
    assert counts == _lowered_counts(theirs.exported_program().graph)
    assert counts[0] >= 1
