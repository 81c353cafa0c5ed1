"""Without torch's ``quantized_decomposed`` module, our fallback is a bit-exact stand-in.

Inductor / ExecuTorch match the exact overloads torch defines, so where torch's module cannot be
imported our fallback must define the same schemas (and follow torch when its namespace changes)
and produce bit-identical results: values, dtypes, strides, errors, Meta shapes, gradients, and
still trace under ``torch.export``. This needs fresh interpreters: one lists torch's namespace,
and a child with the module blocked imports pt2e_quant, runs every case once and reports back;
each test checks one part of that report against torch's kernels in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from pt2e_quant.ops import decomposed_fallback as _decomposed_fallback
from tests.core.ops._decomposed_op_cases import (
    CASE_IDS,
    CASES,
    NAMESPACE,
    REQUIRED_OVERLOADS,
    TORCH_MODULE,
    QdqModule,
    export_input,
    grad_of_fake_quant,
    meta_summary,
    resolve,
    run_op,
)
from tests.paths import REPO

REPO_ROOT = REPO

# --------------------------------------------------------------------------------------------
# the child process: torch's module blocked, then pt2e_quant imported
# --------------------------------------------------------------------------------------------

CHILD_SCRIPT = r"""
import importlib.abc, sys
BLOCKED = "torch.ao.quantization.fx._decomposed"

class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == BLOCKED:
            raise ImportError(f"{fullname} is blocked by the test")
        return None

sys.meta_path.insert(0, _Block())
import torch

def config():
    return (torch.get_default_dtype(), torch.is_grad_enabled(),
            torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
            torch.is_inference_mode_enabled(), torch.is_anomaly_enabled())

report = {"eagerly_imported": BLOCKED in sys.modules,
          "predefined": hasattr(torch.ops.quantized_decomposed, "quantize_per_tensor"),
          "config_before": config()}
import pt2e_quant
from pt2e_quant.ops import compat as _compat
from tests.core.ops import _decomposed_op_cases as t

report["config_after"] = config()
report["source"] = _compat.ensure_quantized_decomposed_ops()
report["source_again"] = _compat.ensure_quantized_decomposed_ops()
report["torch_module_loaded"] = BLOCKED in sys.modules
report["namespace"] = _compat.namespace_schemas(t.NAMESPACE)
report["schemas"] = {q: str(t.resolve(q)._schema) for q in t.REQUIRED_OVERLOADS}
cases = torch.load(sys.argv[2], weights_only=False)
report["results"] = {cid: t.run_op(q, a, k) for cid, q, a, k in cases}
report["meta"] = {cid: t.meta_summary(q, a, k) for cid, q, a, k in cases}
fq = next(c for c in cases if c[0] == "fq_channel")
report["fake_quant_grad"] = t.grad_of_fake_quant(fq[2])
module, x = t.QdqModule(), t.export_input()
program = torch.export.export(module, (x,))
report["export_targets"] = sorted(
    str(n.target) for n in program.graph.nodes if n.op == "call_function")
report["export_out"] = program.module()(x)
report["eager_out"] = module(x)
report["torch_module_loaded_at_end"] = BLOCKED in sys.modules
torch.save(report, sys.argv[1])
"""


def _python(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a fresh interpreter that can import this checkout (and ``tests``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def torch_namespace() -> list[str]:
    """Every schema torch's module defines, from a fresh process.

    Not read in this one: other packages (ExecuTorch) add their own operators to the
    namespace once imported, and a pytest session may have imported them.
    """
    script = (
        f"import importlib, torch; importlib.import_module({TORCH_MODULE!r}); "
        "from pt2e_quant.ops.compat import namespace_schemas; "
        f"print('\\n'.join(namespace_schemas({NAMESPACE!r})))"
    )
    return _python("-c", script).stdout.splitlines()


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Report of the child process; one run serves every fallback test.

    The inputs go over in a file (not regenerated there) so both sides see the same bits.
    """
    folder = tmp_path_factory.mktemp("decomposed")
    out, cases = folder / "report.pt", folder / "cases.pt"
    torch.save(CASES, cases)
    _python("-c", CHILD_SCRIPT, str(out), str(cases))
    return torch.load(out, weights_only=False)


def assert_bit_identical(actual: Any, expected: Any, where: str) -> None:
    """Same type, dtype, shape, strides, and the same bits (so -0.0 != 0.0, NaN == NaN)."""
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_bit_identical(a, e, f"{where}[{index}]")
        return
    if not isinstance(expected, torch.Tensor):
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
        return
    assert isinstance(actual, torch.Tensor), where
    assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), where
    assert actual.stride() == expected.stride(), f"{where}: strides differ"
    if expected.is_floating_point():
        bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
        view = bits[expected.element_size()]
        actual, expected = actual.contiguous().view(view), expected.contiguous().view(view)
    mismatches = (actual != expected).sum().item()
    assert mismatches == 0, f"{where}: {mismatches} of {expected.numel()} elements differ"


# --------------------------------------------------------------------------------------------
# torch's namespace, listed by a fresh process: the fallback's table must equal it
# --------------------------------------------------------------------------------------------


def test_fallback_table_covers_torch_namespace_exactly(torch_namespace: list[str]) -> None:
    # If torch adds, drops or changes an overload, the fallback must follow.
    assert len(torch_namespace) >= len(REQUIRED_OVERLOADS)
    assert sorted(_decomposed_fallback.expected_schemas().values()) == torch_namespace


# --------------------------------------------------------------------------------------------
# in the child: our fallback is the source
# --------------------------------------------------------------------------------------------


def test_child_used_the_fallback(child: dict[str, Any]) -> None:
    # The premise: importing torch alone neither imports the module nor defines the ops.
    assert child["eagerly_imported"] is False
    assert child["predefined"] is False
    assert (child["source"], child["source_again"]) == ("fallback", "fallback")
    assert child["torch_module_loaded"] is False
    assert child["torch_module_loaded_at_end"] is False


def test_child_import_left_torch_config_alone(child: dict[str, Any]) -> None:
    assert child["config_after"] == child["config_before"]


def test_fallback_schemas_equal_torch(child: dict[str, Any], torch_namespace: list[str]) -> None:
    expected = {q: str(resolve(q)._schema) for q in REQUIRED_OVERLOADS}
    assert child["schemas"] == expected
    assert child["namespace"] == torch_namespace


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_fallback_output_bit_identical(child: dict[str, Any], case_id: str) -> None:
    _, qualified, args, kwargs = CASES[CASE_IDS.index(case_id)]
    expected = run_op(qualified, args, kwargs)
    actual = child["results"][case_id]
    if actual[0] != expected[0]:
        pytest.fail(
            f"{case_id}: fallback {actual[0]} {actual[1] if actual[0] == 'raises' else ''}"
            f", torch {expected[0]} {expected[1] if expected[0] == 'raises' else ''}"
        )
    assert_bit_identical(actual[1], expected[1], case_id)


def test_fallback_meta_kernels_match(child: dict[str, Any]) -> None:
    expected = {cid: meta_summary(q, a, k) for cid, q, a, k in CASES}
    differing = [cid for cid in CASE_IDS if child["meta"][cid] != expected[cid]]
    assert not differing, {cid: (child["meta"][cid], expected[cid]) for cid in differing[:5]}


def test_fallback_fake_quant_gradient_matches(child: dict[str, Any]) -> None:
    args = CASES[CASE_IDS.index("fq_channel")][2]
    assert_bit_identical(child["fake_quant_grad"], grad_of_fake_quant(args), "fake_quant")


def test_fallback_ops_trace_under_export(child: dict[str, Any]) -> None:
    module, x = QdqModule(), export_input()
    program = torch.export.export(module, (x,))
    expected_targets = sorted(str(n.target) for n in program.graph.nodes if n.op == "call_function")
    assert child["export_targets"] == expected_targets
    assert sum(NAMESPACE in target for target in expected_targets) == 8
    expected = module(x)
    assert_bit_identical(child["eager_out"], expected, "eager")
    assert_bit_identical(child["export_out"], expected, "exported")
