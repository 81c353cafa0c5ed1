"""The ``quantized_decomposed`` operators exist whenever pt2e_quant is imported, from torch or ours.

Convert's output is only useful if Inductor / ExecuTorch recognise it, and they match the exact
overloads torch defines. So: in this process torch's module must be the source; and in a child
process where that module cannot be imported, our fallback must define the same schemas and
produce bit-identical results (values, dtypes, strides, errors, Meta shapes, gradients) and
still trace under ``torch.export``. The child runs once; each test checks one part of its report.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import pt2e_quant  # noqa: F401  (the import under test)
from pt2e_quant import _compat, _decomposed_fallback

REPO_ROOT = Path(__file__).resolve().parents[2]
TORCH_MODULE = "torch.ao.quantization.fx._decomposed"
NAMESPACE = "quantized_decomposed"
qd = torch.ops.quantized_decomposed

#: Written out rather than taken from the fallback's table, so an omission there is caught.
REQUIRED_OVERLOADS = (
    "quantize_per_tensor.default",
    "quantize_per_tensor.tensor",
    "quantize_per_tensor.tensor2",
    "dequantize_per_tensor.default",
    "dequantize_per_tensor.tensor",
    "dequantize_per_tensor.tensor2",
    "quantize_per_channel.default",
    "dequantize_per_channel.default",
    "choose_qparams.tensor",
    "choose_qparams_symmetric.tensor",
    "convert_element_type.no_fuse",
    "quantize_per_token.default",
    "dequantize_per_token.default",
    "choose_qparams_per_token_asymmetric.default",
    "quantize_per_channel_group.default",
    "dequantize_per_channel_group.default",
    "fake_quant_per_channel.default",
)


def _resolve(qualified: str) -> Any:
    name, overload = qualified.split(".")
    return getattr(getattr(qd, name), overload)


# --------------------------------------------------------------------------------------------
# cases: (id, "op.overload", args, kwargs); expected values are computed with torch's kernels
# --------------------------------------------------------------------------------------------

RANGES = {
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-32768, 32767),
    torch.int32: (-(2**31), 2**31 - 1),
}
EPS = torch.finfo(torch.float32).eps
Q, DQ = "quantize_per_tensor.default", "dequantize_per_tensor.default"


def _build_cases() -> list[tuple[str, str, tuple, dict]]:
    gen = torch.Generator().manual_seed(20240613)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    cases: list[tuple[str, str, tuple, dict]] = []
    add = cases.append
    # Exact .5 ties (power-of-two scale) exercise round-half-to-even.
    ties = (torch.arange(-40, 40, dtype=torch.float32) + 0.5) * 0.25
    # Near-ties where x * (1 / scale) and x / scale round differently: catches the wrong one.
    steps = torch.arange(-200, 200, dtype=torch.float64) + 0.5
    near_ties = torch.stack([(steps * 0.003).float(), (steps * 0.1).float()])
    near_scales = torch.tensor([0.003, 0.1], dtype=torch.float64)
    assert not torch.equal(torch.round(near_ties[1] * (1.0 / 0.1)), torch.round(near_ties[1] / 0.1))
    for dtype, (qmin, qmax) in RANGES.items():
        tag = str(dtype).split(".")[1]
        span = float(qmax) - float(qmin)
        x = randn(4, 8, scale=3.0) if dtype != torch.int32 else randn(4, 8, scale=3e6)
        scale = 6.0 / span * 1.37
        zp = int(qmin + span // 3)
        args = (x, scale, zp, qmin, qmax, dtype)
        add((f"q_tensor_{tag}", Q, args, {}))
        add((f"q_ties_{tag}", Q, (ties, 0.25, 0, qmin, qmax, dtype), {}))
        mid = (qmin + qmax) // 2
        add((f"q_near_ties_{tag}", Q, (near_ties[0], 0.003, mid, qmin, qmax, dtype), {}))
        add(
            (
                f"qc_near_ties_{tag}",
                "quantize_per_channel.default",
                (near_ties.t(), near_scales, torch.tensor([mid, mid]), 1, qmin, qmax, dtype),
                {},
            )
        )
        add((f"q_narrow_{tag}", Q, (x, 0.01, 0, max(qmin, -8), 7, dtype), {}))
        add((f"q_bf16_{tag}", Q, (x.bfloat16(), *args[1:]), {}))
        add((f"q_f16_{tag}", Q, (x.half(), *args[1:]), {}))
        t_scale, t_zp = torch.tensor([scale], dtype=torch.float64), torch.tensor(zp)
        add((f"q_t_{tag}", "quantize_per_tensor.tensor", (x, t_scale, t_zp, qmin, qmax, dtype), {}))
        add(
            (
                f"q_t2_{tag}",
                "quantize_per_tensor.tensor2",
                (x, t_scale, t_zp, torch.tensor(qmin), torch.tensor(qmax), dtype),
                {},
            )
        )
        q = torch.randint(qmin, qmax, (5, 7), generator=gen, dtype=torch.int64).to(dtype)
        for out_dtype in (None, torch.bfloat16, torch.float16):
            kw = {} if out_dtype is None else {"out_dtype": out_dtype}
            otag = f"{tag}_{out_dtype}".replace("torch.", "")
            add((f"dq_{otag}", DQ, (q, scale, zp, qmin, qmax, dtype), kw))
            add(
                (
                    f"dq_t_{otag}",
                    "dequantize_per_tensor.tensor",
                    (q, t_scale, t_zp, qmin, qmax, dtype),
                    kw,
                )
            )
            add(
                (
                    f"dq_t2_{otag}",
                    "dequantize_per_tensor.tensor2",
                    (q, t_scale, t_zp, torch.tensor(qmin), torch.tensor(qmax), dtype),
                    kw,
                )
            )
        # dynamic qparams
        for kind in ("choose_qparams.tensor", "choose_qparams_symmetric.tensor"):
            ktag = f"{kind.split('.')[0]}_{tag}"
            add((ktag, kind, (randn(3, 9, scale=2.0), qmin, qmax, EPS, dtype), {}))
            add((f"{ktag}_pos", kind, (randn(16).abs() + 0.3, qmin, qmax, EPS, dtype), {}))
            add((f"{ktag}_neg", kind, (-randn(8).abs() - 0.5, qmin, qmax, 1e-30, dtype), {}))
            add((f"{ktag}_zeros", kind, (torch.zeros(4), qmin, qmax, EPS, dtype), {}))
            add((f"{ktag}_f16", kind, (randn(2, 5).half(), qmin, qmax, EPS, dtype), {}))
            add((f"{ktag}_bf16", kind, (randn(2, 5).bfloat16(), qmin, qmax, 1e-5, dtype), {}))
        # per-channel, along every axis, with float32 and float64 scales, int32 and int64 zps
        w = randn(6, 4, 5, scale=2.0)
        for axis in (0, 1, 2, -1):
            channels = w.shape[axis]
            for s_dtype, z_dtype in ((torch.float32, torch.int64), (torch.float64, torch.int32)):
                scales = (torch.rand(channels, generator=gen) * 0.05 + 0.005).to(s_dtype)
                zps = torch.randint(qmin // 2, qmax // 2 + 1, (channels,), generator=gen)
                zps = zps.to(z_dtype)
                if dtype == torch.int32:
                    scales = scales * 1e-6
                ctag = f"{tag}_ax{axis}_{s_dtype}".replace("torch.", "")
                add(
                    (
                        f"qc_{ctag}",
                        "quantize_per_channel.default",
                        (w, scales, zps, axis, qmin, qmax, dtype),
                        {},
                    )
                )
                qw = torch.randint(qmin, qmax, tuple(w.shape), generator=gen, dtype=torch.int64).to(
                    dtype
                )
                add(
                    (
                        f"dqc_{ctag}",
                        "dequantize_per_channel.default",
                        (qw, scales, zps, axis, qmin, qmax, dtype),
                        {},
                    )
                )
                add(
                    (
                        f"dqc_nozp_{ctag}",
                        "dequantize_per_channel.default",
                        (qw, scales, None, axis, qmin, qmax, dtype),
                        {"out_dtype": torch.bfloat16},
                    )
                )
        strided = w.transpose(0, 2)  # (5, 4, 6), not contiguous
        nc_scales = torch.rand(5, generator=gen) * 0.05 + (0.005 if dtype != torch.int32 else 0)
        nc_zps = torch.zeros(5, dtype=torch.int64)
        add(
            (
                f"qc_noncontig_{tag}",
                "quantize_per_channel.default",
                (strided, nc_scales + 1e-7, nc_zps, 0, qmin, qmax, dtype),
                {},
            )
        )
    # out-of-bounds or empty ranges and wrong dtypes must fail the same way
    x = randn(3, 4)
    add(("err_qmin_below", Q, (x, 0.1, 0, -129, 127, torch.int8), {}))
    add(("err_qmax_above", Q, (x, 0.1, 0, 0, 256, torch.uint8), {}))
    add(("err_q_dtype", Q, (x, 0.1, 0, 0, 255, torch.float32), {}))
    add(("err_q_input", Q, (x.double(), 0.1, 0, 0, 255, torch.uint8), {}))
    add(
        (
            "err_q_numel",
            "quantize_per_tensor.tensor",
            (x, torch.ones(2), torch.zeros(1, dtype=torch.long), 0, 255, torch.uint8),
            {},
        )
    )
    add(("err_dq_dtype", DQ, (torch.zeros(3, dtype=torch.int8), 0.1, 0, 0, 255, torch.uint8), {}))
    add(
        (
            "err_qc_axis",
            "quantize_per_channel.default",
            (x, torch.ones(4), torch.zeros(4, dtype=torch.long), 2, 0, 255, torch.uint8),
            {},
        )
    )
    add(("err_cq_range", "choose_qparams.tensor", (x, 1, 255, EPS, torch.uint8), {}))
    add(("err_cq_empty_range", "choose_qparams.tensor", (x, 0, 0, EPS, torch.uint8), {}))
    add(("err_cq_input", "choose_qparams.tensor", (x.double(), 0, 255, EPS, torch.uint8), {}))
    # per-token and per-channel-group
    tokens = randn(2, 3, 16, scale=4.0)
    add(("cq_token", "choose_qparams_per_token.default", (tokens, torch.int8), {}))
    add(("cq_token_f16", "choose_qparams_per_token.default", (tokens.half(), torch.int8), {}))
    add(("cq_token_asym", "choose_qparams_per_token_asymmetric.default", (tokens, torch.int8), {}))
    add(
        (
            "cq_token_asym_impl",
            "_choose_qparams_per_token_asymmetric_impl.default",
            (tokens, torch.int8),
            {},
        )
    )
    t_scales = tokens.abs().amax(-1, keepdim=True).double() / 100
    t_zps = torch.randint(-20, 20, (2, 3, 1), generator=gen)
    add(
        (
            "q_token",
            "quantize_per_token.default",
            (tokens, t_scales, t_zps, -128, 127, torch.int8),
            {},
        )
    )
    q_tokens = torch.randint(-128, 127, (2, 3, 16), generator=gen, dtype=torch.int8)
    for out in (torch.float32, torch.bfloat16):
        add(
            (
                f"dq_token_{out}",
                "dequantize_per_token.default",
                (q_tokens, t_scales, t_zps, -128, 127, torch.int8, out),
                {},
            )
        )
    g_w = randn(4, 32, scale=2.0)
    g_scales = torch.rand(16, generator=gen) * 0.3 + 0.05
    g_zps = torch.randint(-3, 4, (16,), generator=gen, dtype=torch.int32)
    add(
        (
            "q_group",
            "quantize_per_channel_group.default",
            (g_w, g_scales, g_zps, -8, 7, torch.int8, 8),
            {},
        )
    )
    g_q = torch.randint(-8, 8, (4, 32), generator=gen, dtype=torch.int8)
    add(
        (
            "dq_group",
            "dequantize_per_channel_group.default",
            (g_q, g_scales, g_zps, -8, 7, torch.int8, 8, torch.float32),
            {},
        )
    )
    add(
        (
            "dq_group_nozp",
            "dequantize_per_channel_group.default",
            (g_q, g_scales, None, -8, 7, torch.int8, 8, torch.bfloat16),
            {},
        )
    )
    near_f32 = near_scales.float()
    add(
        (
            "q_token_near_ties",
            "quantize_per_token.default",
            (near_ties, near_f32.reshape(2, 1), torch.zeros(2, 1), -32768, 32767, torch.int16),
            {},
        )
    )
    add(
        (
            "q_group_near_ties",
            "quantize_per_channel_group.default",
            (near_ties, near_f32, torch.zeros(2), -32768, 32767, torch.int16, 400),
            {},
        )
    )
    add(
        (
            "fq_near_ties",
            "fake_quant_per_channel.default",
            (near_ties.t().contiguous(), near_scales, torch.zeros(2), 1, -1000, 1000),
            {},
        )
    )
    # fake quant (some values clamped, so the gradient mask matters) and the unfusable cast
    fq_x = randn(3, 5, scale=2.0)
    add(
        (
            "fq_channel",
            "fake_quant_per_channel.default",
            (
                fq_x,
                torch.rand(5, generator=gen).double() * 0.1 + 0.01,
                torch.randint(-4, 4, (5,), generator=gen),
                1,
                -16,
                15,
            ),
            {},
        )
    )
    for dtype in (torch.int8, torch.bfloat16, torch.float32, torch.int32):
        add((f"convert_{dtype}", "convert_element_type.no_fuse", (x.t() * 50, dtype), {}))
    return cases


CASES = _build_cases()
CASE_IDS = [case[0] for case in CASES]


def _run(qualified: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    try:
        return "ok", _resolve(qualified)(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the exception type is what is compared
        return "raises", type(error).__name__


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _meta_summary(qualified: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    status, out = _run(qualified, tuple(_to_meta(a) for a in args), kwargs)
    if status != "ok":
        return status, out
    outs = out if isinstance(out, tuple) else (out,)
    return status, [(tuple(t.shape), t.dtype, t.stride()) for t in outs]


def _grad_of_fake_quant(args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    x = args[0].clone().requires_grad_()
    out = qd.fake_quant_per_channel.default(x, *args[1:])
    out.backward(torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape))
    assert x.grad is not None
    return out.detach(), x.grad


class QdqModule(torch.nn.Module):
    """The overloads convert emits (dynamic and static, per-tensor and per-channel)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.register_buffer("weight", torch.randn(6, 8, generator=gen))
        self.register_buffer("w_scales", torch.rand(6, generator=gen) * 0.02 + 0.01)
        self.register_buffer("w_zps", torch.zeros(6, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, zp = qd.choose_qparams.tensor(x, -128, 127, EPS, torch.int8)
        x = qd.dequantize_per_tensor.tensor(
            qd.quantize_per_tensor.tensor(x, s, zp, -128, 127, torch.int8),
            s,
            zp,
            -128,
            127,
            torch.int8,
        )
        w = qd.dequantize_per_channel(
            qd.quantize_per_channel(
                self.weight, self.w_scales, self.w_zps, 0, -127, 127, torch.int8
            ),
            self.w_scales,
            self.w_zps,
            0,
            -127,
            127,
            torch.int8,
        )
        y = torch.nn.functional.linear(x, w)
        y = qd.dequantize_per_tensor(
            qd.quantize_per_tensor(y, 0.05, 3, 0, 255, torch.uint8), 0.05, 3, 0, 255, torch.uint8
        )
        return qd.convert_element_type.no_fuse(y, torch.bfloat16)


def _export_input() -> torch.Tensor:
    return torch.randn(3, 8, generator=torch.Generator().manual_seed(11)) * 2


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
from pt2e_quant import _compat
from tests.core import test_decomposed_ops as t

report["config_after"] = config()
report["source"] = _compat.ensure_quantized_decomposed_ops()
report["source_again"] = _compat.ensure_quantized_decomposed_ops()
report["torch_module_loaded"] = BLOCKED in sys.modules
report["namespace"] = _compat.namespace_schemas(t.NAMESPACE)
report["schemas"] = {q: str(t._resolve(q)._schema) for q in t.REQUIRED_OVERLOADS}
cases = torch.load(sys.argv[2], weights_only=False)
report["results"] = {cid: t._run(q, a, k) for cid, q, a, k in cases}
report["meta"] = {cid: t._meta_summary(q, a, k) for cid, q, a, k in cases}
fq = next(c for c in cases if c[0] == "fq_channel")
report["fake_quant_grad"] = t._grad_of_fake_quant(fq[2])
module, x = t.QdqModule(), t._export_input()
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
        "from pt2e_quant._compat import namespace_schemas; "
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
# in this process: torch's own module is the source
# --------------------------------------------------------------------------------------------


def test_import_uses_torch_module_and_defines_every_overload() -> None:
    assert _compat.ensure_quantized_decomposed_ops() == "torch"
    assert TORCH_MODULE in sys.modules
    for qualified in REQUIRED_OVERLOADS:
        assert str(_resolve(qualified)._schema).startswith(f"{NAMESPACE}::"), qualified


def test_repeat_calls_do_not_import_again(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_import(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("ensure_quantized_decomposed_ops imported again")

    monkeypatch.setattr(importlib, "import_module", no_import)
    assert [_compat.ensure_quantized_decomposed_ops() for _ in range(3)] == ["torch"] * 3


def test_fallback_table_matches_live_schemas() -> None:
    table = _decomposed_fallback.expected_schemas()
    assert set(REQUIRED_OVERLOADS) <= set(table)
    assert {q: str(_resolve(q)._schema) for q in table} == table


def test_fallback_table_covers_torch_namespace_exactly(torch_namespace: list[str]) -> None:
    # If torch adds, drops or changes an overload, the fallback must follow.
    assert len(torch_namespace) >= len(REQUIRED_OVERLOADS)
    assert sorted(_decomposed_fallback.expected_schemas().values()) == torch_namespace


def test_fallback_defines_nothing_already_defined() -> None:
    assert _decomposed_fallback.register_missing() == ()


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
    expected = {q: str(_resolve(q)._schema) for q in REQUIRED_OVERLOADS}
    assert child["schemas"] == expected
    assert child["namespace"] == torch_namespace


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_fallback_output_bit_identical(child: dict[str, Any], case_id: str) -> None:
    _, qualified, args, kwargs = CASES[CASE_IDS.index(case_id)]
    expected = _run(qualified, args, kwargs)
    actual = child["results"][case_id]
    if actual[0] != expected[0]:
        pytest.fail(
            f"{case_id}: fallback {actual[0]} {actual[1] if actual[0] == 'raises' else ''}"
            f", torch {expected[0]} {expected[1] if expected[0] == 'raises' else ''}"
        )
    assert_bit_identical(actual[1], expected[1], case_id)


def test_fallback_meta_kernels_match(child: dict[str, Any]) -> None:
    expected = {cid: _meta_summary(q, a, k) for cid, q, a, k in CASES}
    differing = [cid for cid in CASE_IDS if child["meta"][cid] != expected[cid]]
    assert not differing, {cid: (child["meta"][cid], expected[cid]) for cid in differing[:5]}


def test_fallback_fake_quant_gradient_matches(child: dict[str, Any]) -> None:
    args = CASES[CASE_IDS.index("fq_channel")][2]
    assert_bit_identical(child["fake_quant_grad"], _grad_of_fake_quant(args), "fake_quant")


def test_fallback_ops_trace_under_export(child: dict[str, Any]) -> None:
    module, x = QdqModule(), _export_input()
    program = torch.export.export(module, (x,))
    expected_targets = sorted(str(n.target) for n in program.graph.nodes if n.op == "call_function")
    assert child["export_targets"] == expected_targets
    assert sum(NAMESPACE in target for target in expected_targets) == 8
    expected = module(x)
    assert_bit_identical(child["eager_out"], expected, "eager")
    assert_bit_identical(child["export_out"], expected, "exported")
