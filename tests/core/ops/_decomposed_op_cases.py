"""What the ``quantized_decomposed`` tests compute with, here and in the child process.

The fallback tests run each case twice: with torch's kernels in the pytest process and with our
fallback in a child process that cannot import torch's module. Both sides import this module, so
they agree on the overload list, the cases, how a case is run and summarised, and the module that
is exported; it must stay importable without pytest.
"""

from __future__ import annotations

from typing import Any

import torch

from pt2e_quant.ops import qdq_ops

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


def resolve(qualified: str) -> Any:
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


def run_op(qualified: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    try:
        return "ok", resolve(qualified)(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the exception type is what is compared
        return "raises", type(error).__name__


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def meta_summary(qualified: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    status, out = run_op(qualified, tuple(_to_meta(a) for a in args), kwargs)
    if status != "ok":
        return status, out
    outs = out if isinstance(out, tuple) else (out,)
    return status, [(tuple(t.shape), t.dtype, t.stride()) for t in outs]


def grad_of_fake_quant(args: tuple) -> tuple[torch.Tensor, torch.Tensor]:
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
        s, zp = qdq_ops.CHOOSE_QPARAMS(x, -128, 127, EPS, torch.int8)
        x = qdq_ops.DEQUANTIZE_PER_TENSOR_DYNAMIC(
            qdq_ops.QUANTIZE_PER_TENSOR_DYNAMIC(x, s, zp, -128, 127, torch.int8),
            s,
            zp,
            -128,
            127,
            torch.int8,
        )
        w = qdq_ops.DEQUANTIZE_PER_CHANNEL_ANY(
            qdq_ops.QUANTIZE_PER_CHANNEL_ANY(
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
        y = qdq_ops.DEQUANTIZE_PER_TENSOR_ANY(
            qdq_ops.QUANTIZE_PER_TENSOR_ANY(y, 0.05, 3, 0, 255, torch.uint8),
            0.05,
            3,
            0,
            255,
            torch.uint8,
        )
        return qdq_ops.CONVERT_ELEMENT_TYPE(y, torch.bfloat16)


def export_input() -> torch.Tensor:
    return torch.randn(3, 8, generator=torch.Generator().manual_seed(11)) * 2
