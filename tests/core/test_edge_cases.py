"""Edge cases of the public pipeline, run through the real backends (XNNPACK and X86 Inductor).

What the rest of the suite does not already pin (see test_errors.py, test_pipeline.py,
test_observer.py, test_quantize_model.py for the basics): dynamic shapes end to end, unusual
model signatures, half-precision and channels-last models, degenerate calibration data on the
backends' observers, and misuse of the pipeline (wrong order, serialization). Each test says
what the defined behaviour is.

Every model is tiny; the differential tests (torchao / ExecuTorch peers) use two zoo models.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import math
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim
from torch.fx import GraphModule

from pt2e_quant import ModelNotExportedError, convert_pt2e, prepare_pt2e
from pt2e_quant.observer import NonFiniteObservationWarning
from pt2e_quant.passes.replace_observers import UncalibratedObserverWarning
from quantizers.x86_inductor import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from quantizers.xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.graph_check import ops_in_order
from tests.models import ZOO

qd = torch.ops.quantized_decomposed
Q, DQ = qd.quantize_per_tensor.default, qd.dequantize_per_tensor.default
DQ_CH = qd.dequantize_per_channel.default


def _xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def _x86() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


QUANTIZERS: dict[str, Callable] = {"xnnpack": _xnnpack, "x86": _x86}


def _pipeline(
    gm: GraphModule, quantizer, calibration: list[tuple], kwargs: dict | None = None
) -> GraphModule:
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch, **(kwargs or {}))
    return convert_pt2e(prepared)


def _leaves(out) -> list[Tensor]:
    return torch.utils._pytree.tree_leaves(out)


def _all_equal(a, b) -> bool:
    left, right = _leaves(a), _leaves(b)
    return len(left) == len(right) and all(
        torch.equal(x, y) for x, y in zip(left, right, strict=True)
    )


def _close(a, b, atol: float) -> bool:
    """Quantized vs float outputs: same structure, every float leaf within ``atol``."""
    left, right = _leaves(a), _leaves(b)
    return len(left) == len(right) and all(
        (x.float() - y.float()).abs().max() <= atol for x, y in zip(left, right, strict=True)
    )


def _sqnr(quantized: Tensor, reference: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (int8 models of these sizes reach 20-40)."""
    quantized, reference = quantized.detach().float(), reference.detach().float()
    return float(20 * torch.log10(reference.norm() / (quantized - reference).norm()))


def _snapshot(gm: GraphModule) -> tuple:
    """What a pipeline call must leave unchanged on the user's exported module."""
    return (
        gm.code,
        [(n.name, sorted(n.meta)) for n in gm.graph.nodes],
        sorted(name for name, _ in gm.named_modules()),
        sorted(vars(gm)),
        {k: v.clone() for k, v in gm.state_dict(keep_vars=True).items()},
    )


def _assert_untouched(gm: GraphModule, before: tuple) -> None:
    after = _snapshot(gm)
    assert after[:4] == before[:4]
    assert after[4].keys() == before[4].keys()
    assert all(torch.equal(after[4][k], before[4][k]) for k in before[4]), "tensors changed"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the warnings a test does not check (uncalibrated observers, peers' noise)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------- dynamic shapes


def _transformer_case() -> tuple[nn.Module, tuple, tuple, list, list]:
    """Transformer with a dynamic batch and sequence length: calibrate at (3, 5) and (1, 9),
    run at (4, 7) and (1, 2)."""
    torch.manual_seed(0)
    model = ZOO["transformer_encoder"]().eval()
    dims = ({0: Dim("batch", min=1, max=16), 1: Dim("seq", min=2, max=32)},)
    calibration = [(torch.randn(3, 5, 16),), (torch.randn(1, 9, 16),)]
    tests = [(torch.randn(4, 7, 16),), (torch.randn(1, 2, 16),)]
    return model, model.example_inputs(), dims, calibration, tests


def _conv_case() -> tuple[nn.Module, tuple, tuple, list, list]:
    """MobileNetV2 block with a dynamic batch (example batch 2: a batch of 1 would make
    export specialize the dimension)."""
    torch.manual_seed(0)
    model = ZOO["mobilenet_v2_block"]().eval()
    shape = model.example_inputs()[0].shape[1:]
    dims = ({0: Dim("batch", min=1, max=8)},)
    calibration = [(torch.randn(3, *shape),), (torch.randn(1, *shape),)]
    return model, (torch.randn(2, *shape),), dims, calibration, [(torch.randn(5, *shape),)]


DYNAMIC_CASES = {"transformer": _transformer_case, "mobilenet_v2_block": _conv_case}


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
@pytest.mark.parametrize("case", sorted(DYNAMIC_CASES))
def test_dynamic_shapes_survive_prepare_convert_reexport_and_save(case: str, backend) -> None:
    """Calibrate at several sizes, run at others, re-export with the same dynamic_shapes and
    round-trip through torch.export.save / load: the dims stay symbolic throughout."""
    model, example, dims, calibration, tests = DYNAMIC_CASES[case]()
    gm = torch.export.export(model, example, dynamic_shapes=dims).module()
    with _quiet():
        converted = _pipeline(gm, QUANTIZERS[backend](), calibration)
    assert sum(n.target is Q for n in converted.graph.nodes) > 0
    with torch.no_grad():
        outputs = [converted(*batch) for batch in tests]
    for out, batch in zip(outputs, tests, strict=True):
        assert out.shape == model(*batch).shape
        assert _sqnr(out, model(*batch)) > 15
    program = torch.export.export(converted, example, dynamic_shapes=dims)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    with torch.no_grad():
        assert all(torch.equal(loaded(*b), out) for b, out in zip(tests, outputs, strict=True))


def _peer_pipeline(backend: str):
    """torchao's prepare/convert and the peer quantizer of ``backend`` (ExecuTorch's XNNPACK
    or torchao's X86), without keeping the Inductor pass torchao's x86 import installs."""
    pytest.importorskip("torchao")
    pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
    if backend == "xnnpack":
        pytest.importorskip("executorch")
        peer = importlib.import_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
        config = peer.get_symmetric_quantization_config(is_per_channel=True)
        return pipeline, peer.XNNPACKQuantizer().set_global(config)
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    peer = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    inductor_config.pre_grad_custom_pass = before
    config = peer.get_default_x86_inductor_quantization_config()
    return pipeline, peer.X86InductorQuantizer().set_global(config)


def _functional_sequence(gm: GraphModule) -> list[str]:
    """q/dq and aten ops in order, ``relu_`` spelled ``relu``: our prepare functionalizes
    in-place ops that the peers keep (same values)."""
    names = []
    for target in ops_in_order(gm):
        name = str(target)
        if not name.startswith(("aten.", "quantized_decomposed.")):
            continue
        namespace, op, overload = name.split(".")
        if op.endswith("_") and not op.startswith("_"):
            op = op[:-1]
        names.append(f"{namespace}.{op}.{overload}")
    return names


#: The peers: ExecuTorch's XNNPACKQuantizer, torchao's X86InductorQuantizer (both run by
#: torchao's prepare/convert).
PEER_BACKENDS = [
    pytest.param("xnnpack", marks=[pytest.mark.torchao, pytest.mark.executorch]),
    pytest.param("x86", marks=pytest.mark.torchao),
]


@pytest.mark.parametrize("backend", PEER_BACKENDS)
@pytest.mark.parametrize("case", sorted(DYNAMIC_CASES))
def test_dynamic_shapes_match_the_peer_bit_for_bit(case: str, backend: str) -> None:
    model, example, dims, calibration, tests = DYNAMIC_CASES[case]()
    gm = torch.export.export(model, example, dynamic_shapes=dims).module()
    peer_pipeline, peer_quantizer = _peer_pipeline(backend)
    with _quiet():
        theirs = peer_pipeline.convert_pt2e(
            _calibrated(peer_pipeline.prepare_pt2e(copy.deepcopy(gm), peer_quantizer), calibration)
        )
        ours = _pipeline(gm, QUANTIZERS[backend](), calibration)
    assert _functional_sequence(ours) == _functional_sequence(theirs)
    with torch.no_grad():
        assert all(_all_equal(ours(*b), theirs(*b)) for b in tests)


def _calibrated(prepared: GraphModule, calibration: list[tuple]) -> GraphModule:
    with torch.no_grad():
        for batch in calibration:
            prepared(*batch)
    return prepared


# ---------------------------------------------------------------- model signatures


class TupleOutputs(nn.Module):
    """x ─ a ─┬──────────── out[0]
    └─ b ─ relu ─ out[1]"""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: Tensor):
        hidden = self.a(x)
        return hidden, self.b(hidden).relu()


class DictOutputs(TupleOutputs):
    def forward(self, x: Tensor):
        hidden = self.a(x)
        return {"hidden": hidden, "out": self.b(hidden)}


class KeywordAndScalarInputs(nn.Module):
    """Keyword-only tensor input plus float / bool / int inputs (specialized by export)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor, *, y: Tensor, scale: float, flag: bool, n: int) -> Tensor:
        out = self.a(x) * scale
        if flag:
            out = out + y
        return out * n


class IndexInput(nn.Module):
    """int64 indices ─ embedding ─ add(x) ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.a = nn.Embedding(10, 4), nn.Linear(4, 4)

    def forward(self, indices: Tensor, x: Tensor) -> Tensor:
        return self.a(self.embedding(indices) + x)


class UnusedInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor, unused: Tensor) -> Tensor:
        return self.a(x)


class BufferAndConstant(nn.Module):
    """A registered buffer and a plain tensor attribute (a lifted constant) used in compute."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.register_buffer("offset", torch.randn(4))
        self.gain = torch.rand(4) + 0.5

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x + self.offset) * self.gain


class TiedWeights(nn.Module):
    """Two linears sharing one weight parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x).relu())


class SameModuleTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(self.a(x).relu())


def _x() -> Tensor:
    return torch.randn(2, 4)


SIGNATURES: dict[str, tuple[type[nn.Module], Callable[[], tuple[tuple, dict]]]] = {
    "tuple_outputs": (TupleOutputs, lambda: ((_x(),), {})),
    "dict_outputs": (DictOutputs, lambda: ((_x(),), {})),
    "keyword_and_scalars": (
        KeywordAndScalarInputs,
        lambda: ((_x(),), {"y": _x(), "scale": 0.5, "flag": True, "n": 3}),
    ),
    "index_input": (
        IndexInput,
        lambda: ((torch.tensor([[1, 2], [3, 9]]), torch.randn(2, 2, 4)), {}),
    ),
    "unused_input": (UnusedInput, lambda: ((_x(), torch.randn(3)), {})),
    "buffer_and_constant": (BufferAndConstant, lambda: ((_x(),), {})),
    "tied_weights": (TiedWeights, lambda: ((_x(),), {})),
    "same_module_twice": (SameModuleTwice, lambda: ((_x(),), {})),
}


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_unusual_signatures_quantize_reexport_and_leave_the_model_alone(name, backend) -> None:
    """Output structure as in eager, close to float, re-export gives identical outputs, the
    user's exported module is unchanged (code, metadata, attributes, tensors)."""
    torch.manual_seed(0)
    model_cls, make_inputs = SIGNATURES[name]
    model = model_cls().eval()
    args, kwargs = make_inputs()
    gm = torch.export.export(model, args, kwargs).module()
    before = _snapshot(gm)
    with _quiet():
        converted = _pipeline(gm, QUANTIZERS[backend](), [args], kwargs)
    _assert_untouched(gm, before)
    assert any(n.target is Q for n in converted.graph.nodes)
    out = converted(*args, **kwargs)
    assert torch.utils._pytree.tree_structure(out) == torch.utils._pytree.tree_structure(
        model(*args, **kwargs)
    )
    assert _close(out, model(*args, **kwargs), atol=0.1)
    program = torch.export.export(converted, args, kwargs)
    assert _all_equal(program.module()(*args, **kwargs), out)


def test_specialized_scalar_inputs_stay_guarded_after_convert() -> None:
    """Export bakes float / int inputs into the graph; the converted model keeps export's
    guard, so another value raises instead of silently computing with the old one."""
    args, kwargs = SIGNATURES["keyword_and_scalars"][1]()
    gm = torch.export.export(KeywordAndScalarInputs().eval(), args, kwargs).module()
    with _quiet():
        converted = _pipeline(gm, _xnnpack(), [args], kwargs)
    with pytest.raises(AssertionError, match="scale == 0.5"):
        converted(*args, **{**kwargs, "scale": 0.7})
    with pytest.raises(AssertionError, match="n == 3"):
        converted(*args, **{**kwargs, "n": 4})


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_tied_weight_is_quantized_once_and_shared(backend: str) -> None:
    """One weight tensor, one observer, one folded int8 constant read by both linears."""
    args, _ = SIGNATURES["tied_weights"][1]()
    gm = torch.export.export(TiedWeights().eval(), args).module()
    with _quiet():
        converted = _pipeline(gm, QUANTIZERS[backend](), [args])
    weights = [
        n.args[1] for n in converted.graph.nodes if n.target == torch.ops.aten.linear.default
    ]
    assert [w.target for w in weights] == [DQ_CH, DQ_CH]
    assert weights[0].args[0] is weights[1].args[0]  # the same quantized constant
    assert weights[0].args[1:] == weights[1].args[1:]  # the same qparams


# ---------------------------------------------------------------- models exported in train mode


class ConvBatchNormDropout(nn.Module):
    """x ─ conv ─ bn ─ relu ─ dropout"""

    def __init__(self, out_channels: int = 4) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, out_channels, 3), nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.bn(self.conv(x)).relu())


class BatchNormLinear(nn.Module):
    """x ─ bn (no conv before it, so nothing folds it) ─ linear"""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.linear = nn.BatchNorm1d(4), nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.bn(x))


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_train_mode_dropout_is_warned_about(backend: str) -> None:
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(ConvBatchNormDropout().train(), (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_pt2e(gm, QUANTIZERS[backend]())
    messages = [str(w.message) for w in caught]
    assert any("'dropout'" in m and "eval()" in m for m in messages), messages


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_train_mode_dropout_stays_active(backend: str) -> None:
    """Like the peers, the exported mode is kept: the converted model is stochastic, hence
    the warning above."""
    x = torch.randn(2, 3, 8, 8)
    gm = torch.export.export(ConvBatchNormDropout().train(), (x,)).module()
    with _quiet():
        converted = _pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert not torch.equal(converted(x), converted(x))


def test_unfolded_train_mode_batch_norm_is_warned_about() -> None:
    gm = torch.export.export(BatchNormLinear().train(), (torch.randn(8, 4),)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_pt2e(gm, _xnnpack())
    messages = [str(w.message) for w in caught]
    assert any("'batch_norm'" in m and "eval()" in m for m in messages), messages


def test_calibrating_a_train_mode_batch_norm_leaves_user_buffers_alone() -> None:
    model = BatchNormLinear().train()
    x = torch.randn(8, 4) + 3
    gm = torch.export.export(model, (x,)).module()
    before = _snapshot(gm)
    eager_mean = model.bn.running_mean.clone()
    with _quiet():
        _pipeline(gm, _xnnpack(), [(x,)])
    assert torch.equal(model.bn.running_mean, eager_mean)
    _assert_untouched(gm, before)


# ---------------------------------------------------------------- dtypes and layouts


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_half_precision_models_quantize_and_keep_their_dtype(backend, dtype) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval().to(dtype)
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    gm = torch.export.export(model, (x,)).module()
    with _quiet():
        converted = _pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert any(n.target is Q for n in converted.graph.nodes)
    out = converted(x)
    assert out.dtype == dtype
    assert _close(out, model(x), atol=0.05)


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_matches_executorch_bit_for_bit(dtype) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval().to(dtype)
    x = torch.randn(2, 3, 8, 8, dtype=dtype)
    gm = torch.export.export(model, (x,)).module()
    peer_pipeline, peer_quantizer = _peer_pipeline("xnnpack")
    with _quiet():
        theirs = peer_pipeline.convert_pt2e(
            _calibrated(peer_pipeline.prepare_pt2e(copy.deepcopy(gm), peer_quantizer), [(x,)])
        )
        ours = _pipeline(gm, _xnnpack(), [(x,)])
    assert _functional_sequence(ours) == _functional_sequence(theirs)
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_channels_last_gives_the_same_model_as_contiguous(backend: str) -> None:
    """Exported and calibrated on channels_last: same qparams and outputs as contiguous."""
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval()
    x = torch.randn(2, 3, 8, 8)
    x_cl = x.to(memory_format=torch.channels_last)
    with _quiet():
        cl = _pipeline(
            torch.export.export(model, (x_cl,)).module(), QUANTIZERS[backend](), [(x_cl,)]
        )
        plain = _pipeline(torch.export.export(model, (x,)).module(), QUANTIZERS[backend](), [(x,)])
    assert torch.equal(cl(x_cl), plain(x))
    assert torch.equal(cl(x), cl(x_cl))


def _dynamic_batch_conv(min_batch: int = 0) -> GraphModule:
    x = torch.randn(2, 3, 8, 8)
    dims = ({0: Dim("batch", min=min_batch, max=8)},)
    return torch.export.export(ConvBatchNormDropout().eval(), (x,), dynamic_shapes=dims).module()


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_empty_calibration_batch_is_a_no_op(backend: str) -> None:
    torch.manual_seed(0)
    gm = _dynamic_batch_conv()
    x, empty = torch.randn(2, 3, 8, 8), torch.randn(0, 3, 8, 8)
    with _quiet():
        with_empty = _pipeline(gm, QUANTIZERS[backend](), [(empty,), (x,), (empty,)])
        without = _pipeline(gm, QUANTIZERS[backend](), [(x,)])
    assert torch.equal(with_empty(x), without(x))
    assert with_empty(empty).shape == (0, 4, 6, 6)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_only_empty_calibration_batches_warn_uncalibrated(backend: str) -> None:
    gm = _dynamic_batch_conv()
    prepared = prepare_pt2e(gm, QUANTIZERS[backend]())
    prepared(torch.randn(0, 3, 8, 8))
    with pytest.warns(UncalibratedObserverWarning, match="never saw data.*'x'"):
        converted = convert_pt2e(prepared)
    assert torch.isfinite(converted(torch.randn(2, 3, 8, 8))).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=str)
@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_non_finite_calibration_values_are_ignored_by_histogram_observers(backend, bad) -> None:
    """Both backends calibrate activations with HistogramObserver: a NaN / Inf value is
    dropped (with a warning) and the result equals calibrating on the clean batches alone."""
    torch.manual_seed(0)
    model = ConvBatchNormDropout().eval()
    x = torch.randn(2, 3, 8, 8)
    poisoned = x.clone()
    poisoned[0, 0, 0, 0] = bad
    gm = torch.export.export(model, (x,)).module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dirty = _pipeline(gm, QUANTIZERS[backend](), [(poisoned,), (x,)])
    assert any(issubclass(w.category, NonFiniteObservationWarning) for w in caught)
    with _quiet():
        clean = _pipeline(gm, QUANTIZERS[backend](), [(x.clone(),), (x,)])
    assert torch.equal(dirty(x), clean(x))


def test_non_finite_warning_names_the_observed_node() -> None:
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_pt2e(
        torch.export.export(ConvBatchNormDropout().eval(), (x,)).module(), _x86()
    )
    x[0, 0, 0, 0] = math.inf
    with pytest.warns(NonFiniteObservationWarning, match="'x'"):
        prepared(x)


def _converted_with_weight_scale(
    model: nn.Module, backend: str, x: Tensor
) -> tuple[GraphModule, Tensor]:
    """The converted model (calibrated on ``x``) and its one per-channel weight scale."""
    with _quiet():
        converted = _pipeline(
            torch.export.export(model, (x,)).module(), QUANTIZERS[backend](), [(x,)]
        )
    (dq,) = [n for n in converted.graph.nodes if n.target is DQ_CH]
    return converted, getattr(converted, dq.args[1].target)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_single_output_channel_gets_per_channel_qparams_of_length_one(backend: str) -> None:
    torch.manual_seed(0)
    model = ConvBatchNormDropout(out_channels=1).eval()
    x = torch.randn(2, 3, 8, 8)
    converted, scale = _converted_with_weight_scale(model, backend, x)
    assert scale.shape == (1,) and torch.isfinite(scale).all() and scale.item() > 0
    assert _close(converted(x), model(x), atol=0.05)


@pytest.mark.parametrize("backend", sorted(QUANTIZERS))
def test_all_zero_conv_weight_gets_finite_scales_and_exact_zero(backend: str) -> None:
    """Zero weights and bias: every per-channel weight scale is finite and positive, and the
    output (relu of zero) comes back exactly zero."""
    model = ConvBatchNormDropout().eval()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.bn.bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    converted, scale = _converted_with_weight_scale(model, backend, x)
    assert torch.isfinite(scale).all() and (scale > 0).all()
    assert torch.equal(converted(x), torch.zeros(2, 4, 6, 6))


# ---------------------------------------------------------------- misuse of the pipeline


def _exported_two_linears() -> tuple[GraphModule, Tensor]:
    x = torch.randn(2, 4)
    return torch.export.export(SameModuleTwice().eval(), (x,)).module(), x


def _converted_two_linears() -> tuple[GraphModule, Tensor]:
    gm, x = _exported_two_linears()
    with _quiet():
        return _pipeline(gm, _xnnpack(), [(x,)]), x


def test_convert_of_an_unprepared_model_returns_it_unquantized() -> None:
    gm, x = _exported_two_linears()
    with _quiet():
        converted = convert_pt2e(gm)
    assert not any(str(n.target).startswith("quantized_decomposed") for n in converted.graph.nodes)
    assert torch.equal(converted(x), gm(x))


def test_convert_of_an_unprepared_model_warns() -> None:
    gm, _ = _exported_two_linears()
    with pytest.warns(UserWarning, match="prepare_pt2e"):
        convert_pt2e(gm)


def test_prepare_twice_says_already_prepared() -> None:
    gm, _ = _exported_two_linears()
    prepared = prepare_pt2e(gm, _xnnpack())
    with pytest.raises(ValueError, match="already prepared"):
        prepare_pt2e(prepared, _xnnpack())


def test_prepare_twice_fails_and_leaves_the_prepared_model_alone() -> None:
    gm, x = _exported_two_linears()
    prepared = prepare_pt2e(gm, _xnnpack())
    before = _snapshot(prepared)
    with pytest.raises(ValueError):
        prepare_pt2e(prepared, _xnnpack())
    _assert_untouched(prepared, before)
    prepared(x)  # still calibratable


def test_prepare_of_a_converted_model_says_already_quantized() -> None:
    converted, _ = _converted_two_linears()
    with pytest.raises(ValueError, match="already quantized"):
        prepare_pt2e(converted, _xnnpack())


def test_convert_twice_is_a_no_op() -> None:
    converted, x = _converted_two_linears()
    again = convert_pt2e(converted)
    assert again is not converted
    assert [n.format_node() for n in again.graph.nodes] == [
        n.format_node() for n in converted.graph.nodes
    ]
    assert torch.equal(again(x), converted(x))


@pytest.mark.parametrize("api", [prepare_pt2e, convert_pt2e], ids=lambda f: f.__name__)
def test_eager_module_and_exported_program_name_the_call_to_write(api) -> None:
    model = SameModuleTwice().eval()
    program = torch.export.export(model, (torch.randn(2, 4),))
    args = (_xnnpack(),) if api is prepare_pt2e else ()
    name = api.__name__
    with pytest.raises(ModelNotExportedError, match=rf"{name}\(exported_program\.module\(\)"):
        api(program, *args)
    with pytest.raises(ModelNotExportedError, match=rf"{name}\(torch\.export\.export\(model"):
        api(model, *args)


class FailingXNNPACKQuantizer(XNNPACKQuantizer):
    """Annotates (after its transform lifted the scalar operand into a constant), then fails."""

    def annotate(self, model: GraphModule) -> GraphModule:
        super().annotate(model)
        raise RuntimeError("annotator bug")


class ScalarMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) * 0.5


def test_failed_annotate_after_transform_leaves_the_model_alone() -> None:
    """XNNPACK's transform_for_annotation adds constant attributes; a later failure must not
    leave them (or annotations) on the user's module."""
    x = torch.randn(2, 4)
    gm = torch.export.export(ScalarMul().eval(), (x,)).module()
    before = _snapshot(gm)
    quantizer = FailingXNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with pytest.raises(RuntimeError, match="annotator bug"):
        prepare_pt2e(gm, quantizer)
    _assert_untouched(gm, before)
    assert all("quantization_annotation" not in n.meta for n in gm.graph.nodes)


def test_deepcopy_of_a_prepared_model_calibrates_independently() -> None:
    gm, x = _exported_two_linears()
    prepared = prepare_pt2e(gm, _xnnpack())
    prepared(x)
    clone = copy.deepcopy(prepared)
    clone(x * 10)
    with _quiet():
        original, copied = convert_pt2e(prepared), convert_pt2e(clone)
    assert not torch.equal(original(x), copied(x))
    with _quiet():
        reference = _pipeline(gm, _xnnpack(), [(x,)])
    assert torch.equal(original(x), reference(x))
    assert torch.equal(copy.deepcopy(original)(x), original(x))


def test_torch_exported_modules_cannot_be_pickled() -> None:
    """Whole-module pickling is not a save path: torch.export's own module() cannot be
    pickled, and neither can what prepare/convert derive from it. The supported paths are
    state_dict (test_checkpoint) and torch.export.save of the re-exported program (the
    dynamic-shape test)."""
    gm, _ = _exported_two_linears()
    with pytest.raises(AttributeError, match="Can't pickle local object"):
        torch.save(gm, io.BytesIO())
