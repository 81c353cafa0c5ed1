"""Random-graph differential fuzzing of the backend quantizers against their peers.

The zoo differentials (test_xnnpack.py, test_x86_inductor.py) pin a fixed set of models. Here a
seeded generator builds small random models from the ops the quantizers cover (convs with and
without bias, depthwise and transposed convs, conv -> batch norm, linear, a dozen activations
in module / functional / in-place spellings, residual add / mul, scalar add / mul, cat, pools,
mean, views, slices, dropout, matmul), with shapes kept consistent, and every model goes
through both pipelines under each preset:

* ours: XNNPACKQuantizer / X86InductorQuantizer + pt2e_quant's prepare / convert;
* the peer: ExecuTorch's XNNPACKQuantizer / torchao's X86InductorQuantizer + torchao's.

For each model and preset both prepares must succeed (or both fail), the converted graphs must
hold the same q/dq op counts and the outputs must be bit-identical on the same data. Seeds
that hit a documented deliberate difference (a peer bug) are listed with the reason.
"""

from __future__ import annotations

import collections
import copy
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quantizers.xnnpack import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.peer_annotation import library
from tests.quantizers import test_x86_inductor as x86_tests
from tests.quantizers import test_xnnpack as xnnpack_tests

Shape = tuple[int, ...]
QD = "quantized_decomposed."

# ------------------------------------------------------------------------------ generator


@dataclass(frozen=True)
class Step:
    """One op of a random model: ``kind`` applied to earlier values ``inputs`` (indices into
    the value list, 0 = the model input), using submodule ``module`` when it has one."""

    kind: str
    inputs: tuple[int, ...]
    module: str | None = None
    arg: object = None


_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu_inplace_module": lambda: nn.ReLU(inplace=True),
    "hardtanh": nn.Hardtanh,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}

_ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "F.relu": F.relu,
    "torch.relu": torch.relu,
    "F.relu6": F.relu6,
    "F.hardtanh": F.hardtanh,
    "F.hardswish": F.hardswish,
    "F.silu": F.silu,
    "F.gelu": F.gelu,
    "torch.tanh": torch.tanh,
    "F.leaky_relu": F.leaky_relu,
    "torch.sigmoid": torch.sigmoid,
}

#: In-place spellings; only applied to a value no later step reads through another path.
_INPLACE_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu_": torch.relu_,
    "F.hardtanh_": F.hardtanh_,
}

#: Ops that return a view of their input: an in-place op on their result would write through
#: to the viewed tensor, which the generator avoids (it is not what these tests are about).
_VIEW_KINDS = frozenset(
    {"flatten", "reshape", "view", "permute", "transpose", "unsqueeze", "squeeze", "slice"}
)


class RandomGraph(nn.Module):
    """A random DAG of ops, interpreted by ``forward`` (export unrolls the loop).

    Built from ``seed`` alone, so a failing seed is its own reproduction::

        model = RandomGraph(seed); print(model)  # the step list is in the repr
    """

    def __init__(self, seed: int, max_steps: int = 7) -> None:
        super().__init__()
        self.seed = seed
        rng = random.Random(seed)
        torch.manual_seed(seed)
        channels, size = rng.choice([(4, 8), (3, 6), (2, 8), (4, 4)])
        self.input_shape: Shape = (1, channels, size, size)
        self.steps: list[Step] = []
        self._shapes: list[Shape] = [self.input_shape]
        self._from_view: list[bool] = [True]  # the input is never written in place
        for _ in range(rng.randint(2, max_steps)):
            self._add_random_step(rng)

    # -- building ---------------------------------------------------------------------------

    def _new_module(self, module: nn.Module) -> str:
        name = f"m{len(self.steps)}"
        self.add_module(name, module)
        return name

    def _push(self, step: Step, shape: Shape) -> None:
        self.steps.append(step)
        self._shapes.append(shape)
        self._from_view.append(step.kind in _VIEW_KINDS)

    def _add_random_step(self, rng: random.Random) -> None:
        current = len(self._shapes) - 1
        shape = self._shapes[current]
        candidates = [name for name, (ok, _) in _STEP_MAKERS.items() if ok(shape)]
        kind = rng.choice(candidates)
        _STEP_MAKERS[kind][1](self, rng, current, shape)

    # -- running ----------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        values = [x]
        for step in self.steps:
            values.append(_apply(self, step, values))
        return values[-1]

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(self.input_shape),)

    def extra_repr(self) -> str:
        lines = [f"seed={self.seed}, input={self.input_shape}"]
        lines += [
            f"v{i + 1} = {s.kind}({', '.join(f'v{j}' for j in s.inputs)}"
            + (f", {s.module}" if s.module else "")
            + (f", {s.arg!r}" if s.arg is not None else "")
            + f") -> {self._shapes[i + 1]}"
            for i, s in enumerate(self.steps)
        ]
        return "\n".join(lines)


def _apply(model: RandomGraph, step: Step, values: list[Tensor]) -> Tensor:
    args = [values[i] for i in step.inputs]
    module = getattr(model, step.module) if step.module else None
    kind, arg = step.kind, step.arg
    if module is not None:
        return module(*args)
    if kind in _ACTIVATION_FUNCTIONS:
        return _ACTIVATION_FUNCTIONS[kind](args[0])
    if kind in _INPLACE_ACTIVATIONS:
        return _INPLACE_ACTIVATIONS[kind](args[0])
    if kind == "add":
        return args[0] + args[1]
    if kind == "add_":
        out = args[0]
        out += args[1]
        return out
    if kind == "mul":
        return args[0] * args[1]
    if kind == "add_scalar":
        return args[0] + arg
    if kind == "mul_scalar":
        return args[0] * arg
    if kind == "cat":
        return torch.cat(args, dim=1)
    if kind == "max_pool2d":
        return F.max_pool2d(args[0], 2)
    if kind == "avg_pool2d":
        return F.avg_pool2d(args[0], 2)
    if kind == "adaptive_avg_pool2d":
        return F.adaptive_avg_pool2d(args[0], arg)
    if kind == "mean":
        return args[0].mean(dim=(-1, -2), keepdim=True)
    if kind == "flatten":
        return torch.flatten(args[0], arg)
    if kind == "reshape":
        return args[0].reshape(arg)
    if kind == "view":
        return args[0].view(arg)
    if kind == "permute":
        return args[0].permute(arg)
    if kind == "transpose":
        return args[0].transpose(*arg)
    if kind == "unsqueeze":
        return args[0].unsqueeze(arg)
    if kind == "squeeze":
        return args[0].squeeze(arg)
    if kind == "slice":
        dim, start = arg
        return args[0].narrow(dim, start, args[0].shape[dim] - start)
    if kind == "matmul":
        return torch.matmul(args[0], args[1].transpose(-1, -2))
    if kind == "F.dropout":
        return F.dropout(args[0], 0.5, training=model.training)
    raise AssertionError(kind)


# -- step makers: (applies to this shape?, append the step) --------------------------------


def _is_image(shape: Shape) -> bool:
    return len(shape) == 4


def _any(shape: Shape) -> bool:
    return True


def _make_conv(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    c = shape[1]
    out = rng.choice([2, 4, 6])
    kernel = rng.choice([1, 3])
    conv = nn.Conv2d(c, out, kernel, padding=kernel // 2, bias=rng.random() < 0.7)
    model._push(Step("conv2d", (i,), model._new_module(conv)), (1, out, *shape[2:]))
    if rng.random() < 0.3 and shape[2] * shape[3] > 1:  # training-mode bn needs 2 values
        bn = nn.BatchNorm2d(out)
        with torch.no_grad():  # non-trivial running statistics, so folding changes numbers
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        model._push(Step("batch_norm", (i + 1,), model._new_module(bn)), (1, out, *shape[2:]))


def _make_depthwise(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    c = shape[1]
    conv = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=rng.random() < 0.7)
    model._push(Step("depthwise_conv2d", (i,), model._new_module(conv)), shape)


def _make_conv_transpose(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    out = rng.choice([2, 4])
    conv = nn.ConvTranspose2d(shape[1], out, 3, padding=1, bias=rng.random() < 0.7)
    model._push(Step("conv_transpose2d", (i,), model._new_module(conv)), (1, out, *shape[2:]))


def _make_conv1d(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    out, kernel = rng.choice([2, 4]), rng.choice([1, 3])
    conv = nn.Conv1d(shape[1], out, kernel, padding=kernel // 2, bias=rng.random() < 0.7)
    model._push(Step("conv1d", (i,), model._new_module(conv)), (1, out, shape[2]))


def _make_linear(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    out = rng.choice([3, 4, 8])
    linear = nn.Linear(shape[-1], out, bias=rng.random() < 0.8)
    model._push(Step("linear", (i,), model._new_module(linear)), (*shape[:-1], out))


def _make_activation(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    """Any activation; relu (what most patterns fuse) in a third of the draws."""
    if rng.random() < 0.35:
        spellings = ["F.relu", "torch.relu", "relu", "relu_inplace_module"]
        if not model._from_view[i] and i > 0:
            spellings.append("relu_")
        name = rng.choice(spellings)
        if name in _ACTIVATION_MODULES:
            model._push(Step(name, (i,), model._new_module(_ACTIVATION_MODULES[name]())), shape)
        else:
            model._push(Step(name, (i,)), shape)
        return
    spellings = ["module", "module", "function"]
    if not model._from_view[i] and i > 0:
        spellings.append("inplace")
    spelling = rng.choice(spellings)
    if spelling == "module":
        name = rng.choice(sorted(_ACTIVATION_MODULES))
        model._push(Step(name, (i,), model._new_module(_ACTIVATION_MODULES[name]())), shape)
    elif spelling == "function":
        model._push(Step(rng.choice(sorted(_ACTIVATION_FUNCTIONS)), (i,)), shape)
    else:
        model._push(Step(rng.choice(sorted(_INPLACE_ACTIVATIONS)), (i,)), shape)


def _same_shape_partners(model: RandomGraph, i: int) -> list[int]:
    return [j for j, s in enumerate(model._shapes) if s == model._shapes[i]]


def _make_binary(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    """A residual add / mul with an earlier value of the same shape (itself when none)."""
    other = rng.choice(_same_shape_partners(model, i))
    kinds = ["add", "add", "mul"]
    if not model._from_view[i] and i > 0:
        kinds.append("add_")
    model._push(Step(rng.choice(kinds), (i, other)), shape)


def _make_scalar(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    kind = rng.choice(["add_scalar", "mul_scalar"])
    model._push(Step(kind, (i,), arg=rng.choice([0.5, 1.0, 2.0, -1.5])), shape)


def _make_cat(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    partners = [
        j
        for j, s in enumerate(model._shapes)
        if len(s) == 4 and s[2:] == shape[2:] and s[1] + shape[1] <= 12
    ]
    if not partners:
        return
    other = rng.choice(partners)
    inputs = (i, other) if rng.random() < 0.5 else (other, i)
    channels = shape[1] + model._shapes[other][1]
    model._push(Step("cat", inputs), (1, channels, *shape[2:]))


def _make_pool(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    kind = rng.choice(["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean", "maxpool_module"])
    n, c, h, w = shape
    if kind in ("max_pool2d", "avg_pool2d", "maxpool_module") and min(h, w) < 2:
        kind = "mean"
    if kind == "maxpool_module":
        model._push(Step(kind, (i,), model._new_module(nn.MaxPool2d(2))), (n, c, h // 2, w // 2))
    elif kind in ("max_pool2d", "avg_pool2d"):
        model._push(Step(kind, (i,)), (n, c, h // 2, w // 2))
    elif kind == "adaptive_avg_pool2d":
        size = rng.choice([1, 2])
        model._push(Step(kind, (i,), arg=size), (n, c, size, size))
    else:
        model._push(Step("mean", (i,)), (n, c, 1, 1))


def _make_view(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    """A layout op: flatten, reshape / view to 3-D and back, permute, transpose, unsqueeze."""
    options = ["transpose", "unsqueeze"]
    if len(shape) == 4:
        options += ["flatten1", "flatten2", "reshape", "permute"]
    if len(shape) == 3:
        options += ["flatten1", "view_back"]
    if len(shape) == 5:
        options = ["squeeze"]
    choice = rng.choice(options)
    if choice == "transpose":
        dims = (-1, -2) if len(shape) >= 3 else (0, 1)
        new = list(shape)
        new[dims[0]], new[dims[1]] = new[dims[1]], new[dims[0]]
        model._push(Step("transpose", (i,), arg=dims), tuple(new))
    elif choice == "unsqueeze":
        model._push(Step("unsqueeze", (i,), arg=0), (1, *shape))
    elif choice == "squeeze":
        model._push(Step("squeeze", (i,), arg=0), shape[1:])
    elif choice.startswith("flatten"):
        start = int(choice[-1])
        flat = 1
        for d in shape[start:]:
            flat *= d
        model._push(Step("flatten", (i,), arg=start), (*shape[:start], flat))
    elif choice == "reshape":
        new = (shape[0], shape[1], shape[2] * shape[3])
        model._push(Step(rng.choice(["reshape", "view"]), (i,), arg=new), new)
    elif choice == "view_back":
        side = int(shape[2] ** 0.5)
        if side * side != shape[2]:
            return
        new = (shape[0], shape[1], side, side)
        model._push(Step("reshape", (i,), arg=new), new)
    else:
        model._push(Step("permute", (i,), arg=(0, 2, 3, 1)), (shape[0], *shape[2:], shape[1]))


def _make_slice(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    dims = [d for d in range(1, len(shape)) if shape[d] >= 2]
    if not dims:
        return
    dim = rng.choice(dims)
    start = rng.randint(1, shape[dim] - 1)
    new = list(shape)
    new[dim] -= start
    model._push(Step("slice", (i,), arg=(dim, start)), tuple(new))


def _make_dropout(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    if rng.random() < 0.5:
        model._push(Step("dropout", (i,), model._new_module(nn.Dropout(0.5))), shape)
    else:
        model._push(Step("F.dropout", (i,)), shape)


def _make_matmul(model: RandomGraph, rng: random.Random, i: int, shape: Shape) -> None:
    """``a @ b.transpose(-1, -2)`` with ``b`` an earlier value of ``a``'s shape."""
    other = rng.choice(_same_shape_partners(model, i))
    model._push(Step("matmul", (i, other)), (*shape[:-1], shape[-2]))


#: kind -> (applies to a value of this shape?, maker); drawn uniformly among the applicable.
_STEP_MAKERS: dict[str, tuple[Callable[[Shape], bool], Callable]] = {
    "conv2d": (_is_image, _make_conv),
    "conv2d_again": (_is_image, _make_conv),  # convs twice as likely as the other ops
    "depthwise": (_is_image, _make_depthwise),
    "conv_transpose2d": (_is_image, _make_conv_transpose),
    "conv1d": (lambda s: len(s) == 3, _make_conv1d),
    "linear": (lambda s: len(s) in (2, 3, 4) and s[-1] <= 64, _make_linear),
    "activation": (_any, _make_activation),
    "activation_again": (_any, _make_activation),
    "binary": (_any, _make_binary),
    "scalar": (_any, _make_scalar),
    "cat": (_is_image, _make_cat),
    "pool": (_is_image, _make_pool),
    "view": (lambda s: len(s) >= 2, _make_view),
    "slice": (lambda s: len(s) >= 2, _make_slice),
    "dropout": (_any, _make_dropout),
    "matmul": (lambda s: len(s) >= 2 and s[-1] <= 64, _make_matmul),
}


# ---------------------------------------------------------------------------- differential


@dataclass
class Outcome:
    """What one pipeline made of one model: the error, or q/dq counts and outputs."""

    error: str | None = None
    qdq: collections.Counter | None = None
    outputs: list[Tensor] | None = None


XNNPACK_PRESETS = ("per_tensor", "per_channel", "dynamic", "qat")
X86_PRESETS = ("static", "qat", "dynamic")


def _qdq_counts(gm) -> collections.Counter:
    return collections.Counter(n for n in xnnpack_tests._qdq_and_compute(gm) if n.startswith(QD))


def _xnnpack(ours: bool, model: RandomGraph, preset: str, strict: bool = False) -> Outcome:
    """One model through ExecuTorch's quantizer + torchao's pipeline, or ours + ours, with
    test_xnnpack's runner (one calibration / training step, then ``test_input``)."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer
    from torchao.quantization.pt2e import move_exported_model_to_eval as peer_to_eval

    import pt2e_quant

    qat = preset == "qat"
    kwargs = xnnpack_tests._PRESETS[preset]
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
        converted, out = xnnpack_tests._run(
            lib, quantizer, exported, example, test_input, to_eval, qat
        )
    except Exception as error:  # noqa: BLE001 - a crash is an outcome to compare
        return Outcome(error=f"{type(error).__name__}: {error}")
    return Outcome(qdq=_qdq_counts(converted), outputs=out)


def _x86(ours: bool, model: RandomGraph, preset: str, strict: bool = False) -> Outcome:
    """One model through torchao's X86InductorQuantizer + pipeline, or ours + ours, with
    test_x86_inductor's runner (three calibration batches, QAT in training mode)."""
    torch.manual_seed(model.seed)
    example = model.example_inputs()
    calibration = [example] + [model.example_inputs() for _ in range(2)]
    model.train(preset == "qat")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = x86_tests._run(ours, model, calibration, preset, strict=strict)
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


# ------------------------------------------------------------------------- known differences

#: Why a seed disagrees on purpose: each is a peer bug we do not reproduce or a deliberate
#: choice (reason, what the disagreement looks like, and how it was confirmed). Found by
#: exploring seeds 0-199 under every preset (last re-run after the core made eval-mode dropout
#: and friends aliases of their input, and made QAT train the batch norm it folds: no entry
#: went stale, none of our defects showed).
ADAPTIVE_POOL_METADATA = (
    "peer bug: ExecuTorch finds adaptive_avg_pool2d through source_fn_stack, which non-strict "
    "export does not record, so it leaves a pool with a float producer float; we match the "
    "aten op (on the strict IR the peer agrees, checked)"
)
QAT_CONV_TRANSPOSE_AXIS = (
    "peer bug: under per-channel QAT every transposed conv's weight is fake-quantized along "
    "axis 0 (its input channels), with or without batch norm. ExecuTorch's conv-transpose "
    "annotator asks for axis 1, but torchao's prepare (_create_obs_or_fq_from_qspec) drops a "
    "spec's ch_axis unless the constructor's class name contains 'PerChannel'; the QAT "
    "weight constructor is FusedMovingAvgObsFakeQuantize, so its "
    "MovingAveragePerChannelMinMaxObserver keeps its default axis 0 (ExecuTorch's conv-bn "
    "annotator asks for axis 0 outright, and ATen's fused kernel only takes axis 0). We use "
    "axis 1; with the peer made to honour axis 1 the seed agrees (checked)"
)
SHARED_UNSQUEEZE = (
    "deliberate: unsqueeze shares its producer's qparams in ours; ExecuTorch's sharing list "
    "has no unsqueeze, so it leaves it unannotated: re-quantized when a quantized op reads "
    "it (seed 24), else float together with the sharing ops after it, e.g. a dropout "
    "(seed 148) (see test_xnnpack.test_pools_and_views_share_their_producers_qparams)"
)
BN_FOLD_MULTI_USER = (
    "peer bug: torchao's PTQ prepare (_fuse_conv_bn_) folds conv -> batch_norm even when the "
    "conv's output has other users, so those users read the batch-normed value; we keep the "
    "batch norm (with the peer's fold skipping such convs they agree, checked). Under X86 QAT "
    "torchao annotates the same pair as a fused conv-bn and puts an output q/dq after a batch "
    "norm its QAT rewrite never folds; we quantize the conv alone"
)
INPLACE_RELU_FUNCTIONALIZED = (
    "deliberate: our prepare makes relu_ functional, and relu shares its producer's qparams; "
    "ExecuTorch's sharing list has hardtanh_ but no relu_, so it leaves relu_ unannotated: "
    "the sharing ops after it stay float (seeds 150, 185: q/dq counts differ) or a quantized "
    "reader gets a fresh observer with its own scale (seed 166: outputs differ). With relu_ "
    "added to the peer's list all three agree (checked)"
)
X86_PEER_CRASH_SCALAR_ADD = (
    "peer bug: torchao's conv-add and linear-add annotators assert, in "
    "_get_input_idx_for_binary_node, that the add's other operand is a Node, so prepare "
    "crashes on conv (-> batch norm) / linear -> add(scalar); ours quantizes the conv / linear"
)
X86_LONE_CONV1D = (
    "deliberate: ours quantizes a conv1d that no relu follows "
    "(test_x86_inductor.test_lone_conv1d_is_quantized); torchao leaves it float"
)
X86_FUNCTIONAL_RELU = (
    "peer bug: torchao's conv-unary annotator finds a functional torch.relu_ through "
    "source_fn_stack, which non-strict export does not record, so the relu_ after a conv "
    "stays unfused and the pool after it float; we match the aten ops (on the strict IR "
    "torchao agrees, checked)"
)
X86_QAT_FUNCTIONAL_UNARY = (
    "peer bug: torchao's QAT conv-bn-unary annotator looks for nn-module source partitions "
    "[Conv2d, BatchNorm2d, ReLU / Hardtanh / ...], so a functional torch.relu after conv -> "
    "batch norm is missed, even on the strict IR; it falls back to conv-bn and quantizes "
    "between the batch norm and the relu. We match the aten ops and quantize after the relu "
    "(with nn.ReLU both agree, checked)"
)

ALIASED_WRITE = (
    "deliberate (peer bug): hardtanh_ writes through an eval-mode dropout into the tensor a "
    "later op reads; we keep the edges that must see the write float (AliasedWriteWarning), "
    "the peer quantizes them and its converted model reads the value from before the write "
    "(tests/core/passes/test_insert_observers.py)"
)

_PTQ_XNNPACK = ("per_tensor", "per_channel", "dynamic")
_STATIC_XNNPACK = ("per_tensor", "per_channel", "qat")

#: (backend, seed) -> {preset: reason}; "*" = every preset of that backend. Every XNNPACK QAT
#: seed with a transposed conv is also QAT_CONV_TRANSPOSE_AXIS, by rule (see _reason).
KNOWN: dict[tuple[str, int], dict[str, str]] = {
    ("xnnpack", 4): {"qat": QAT_CONV_TRANSPOSE_AXIS},
    ("xnnpack", 16): {"qat": QAT_CONV_TRANSPOSE_AXIS},
    **{
        ("xnnpack", seed): dict.fromkeys(_STATIC_XNNPACK, ADAPTIVE_POOL_METADATA)
        for seed in (12, 39, 115, 196)
    },
    **{("xnnpack", seed): dict.fromkeys(_STATIC_XNNPACK, SHARED_UNSQUEEZE) for seed in (24, 148)},
    **{
        ("xnnpack", seed): dict.fromkeys(_PTQ_XNNPACK, BN_FOLD_MULTI_USER)
        for seed in (46, 118, 161)
    },
    **{
        ("xnnpack", seed): dict.fromkeys(_STATIC_XNNPACK, INPLACE_RELU_FUNCTIONALIZED)
        for seed in (150, 166, 185)
    },
    **{("x86", seed): {"*": X86_PEER_CRASH_SCALAR_ADD} for seed in (3, 26, 46, 87, 98, 107, 121)},
    **{("x86", seed): {"*": X86_LONE_CONV1D} for seed in (21, 53, 160)},
    ("x86", 112): {"*": X86_FUNCTIONAL_RELU},
    ("x86", 118): {"*": BN_FOLD_MULTI_USER},
    ("x86", 161): {"*": BN_FOLD_MULTI_USER},
    ("x86", 189): {"qat": X86_QAT_FUNCTIONAL_UNARY},
    ("xnnpack", 160): dict.fromkeys(_STATIC_XNNPACK, ALIASED_WRITE),
}

#: Seeds that found our defects, kept as regression cases once fixed:
#: (backend, seed, presets) -> reason.
FIXED_DEFECTS = {
    ("xnnpack", 160, ("per_tensor", "per_channel", "dynamic")): (
        "prepare's replace_inplace_ops turned hardtanh_ on the output of an eval-mode "
        "aten.dropout into hardtanh, but that dropout returns its input (an alias the schema "
        "does not declare), so the in-place clamp of the dropout's input was lost "
        "(see test_minimal_inplace_after_eval_dropout)"
    ),
}

#: Seeds where we are wrong and the peer right, run as strict xfails until fixed (then move
#: the entry to FIXED_DEFECTS): (backend, seed, presets) -> reason. None in seeds 0-199.
OUR_DEFECTS: dict[tuple[str, int, tuple[str, ...]], str] = {}

CI_SEEDS = range(12)  # 0-199 explored; keep the file under ~90 s
#: one seed per kind of known difference beyond CI_SEEDS
EXTRA_SEEDS = {
    "xnnpack": (12, 24, 39, 46, 148, 166, 185),
    "x86": (21, 98, 112, 118, 161, 189),
}


def _known(backend: str, preset: str, seed: int) -> str | None:
    reasons = KNOWN.get((backend, seed), {})
    return reasons.get(preset, reasons.get("*"))


def _reason(backend: str, preset: str, seed: int, steps: list[str]) -> str | None:
    """Why ``seed`` may disagree: its KNOWN entry, else the transposed-conv QAT rule."""
    reason = _known(backend, preset, seed)
    if reason is None and backend == "xnnpack" and preset == "qat" and "conv_transpose2d" in steps:
        reason = QAT_CONV_TRANSPOSE_AXIS
    return reason


def _cases():
    for backend, presets in (("xnnpack", XNNPACK_PRESETS), ("x86", X86_PRESETS)):
        for preset in presets:
            for seed in (*CI_SEEDS, *EXTRA_SEEDS[backend]):
                yield pytest.param(backend, preset, seed, id=f"{backend}-{preset}-{seed}")
    for backend, seed, presets in FIXED_DEFECTS:
        for preset in presets:
            yield pytest.param(backend, preset, seed, id=f"{backend}-{preset}-{seed}")
    for (backend, seed, presets), reason in OUR_DEFECTS.items():
        mark = pytest.mark.xfail(strict=True, reason=reason)
        for preset in presets:
            yield pytest.param(backend, preset, seed, marks=mark, id=f"{backend}-{preset}-{seed}")


@pytest.fixture(scope="module")
def peers(peer_pattern_cache):
    pytest.importorskip("torchao")
    pytest.importorskip("executorch")


def _peer_honours_transposed_weight_axis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the peer fake-quantize transposed-conv weights along axis 1, as we do.

    Undoes both halves of QAT_CONV_TRANSPOSE_AXIS: the conv-bn annotators' axis-0 weight spec
    is rewritten to axis 1, and a per-channel spec on axis 1 gets the peer's own fused fake
    quant run on the weight with dims 0 and 1 swapped (its ATen kernel only takes axis 0),
    reporting ``ch_axis=1`` to convert. Everything else stays the peer's.
    """
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as annotators
    from torchao.quantization.pt2e import prepare as peer_prepare
    from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    class AxisOneFakeQuant(FusedMovingAvgObsFakeQuantize):
        def forward(self, x: Tensor) -> Tensor:
            self.ch_axis = 0
            try:
                return super().forward(x.transpose(0, 1)).transpose(0, 1)
            finally:
                self.ch_axis = 1

    create = peer_prepare._create_obs_or_fq_from_qspec

    def create_honouring_axis(spec, obs_or_fq_map, is_qat):
        made = create(spec, obs_or_fq_map, is_qat)
        per_channel = getattr(spec, "qscheme", None) == torch.per_channel_symmetric
        if isinstance(spec, QuantizationSpec) and per_channel and spec.ch_axis == 1:
            if type(made) is FusedMovingAvgObsFakeQuantize:
                made.__class__ = AxisOneFakeQuant
                made.ch_axis = 1
        return made

    def weight_on_axis_1(annotate):
        def annotate_then_fix(gm, config, filter_fn=None):
            partitions = annotate(gm, config, filter_fn)
            for node in gm.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None or node.target is not torch.ops.aten.conv_transpose2d.input:
                    continue
                weight = node.args[1]
                if annotation.input_qspec_map.get(weight) is not None:
                    spec = annotation.input_qspec_map[weight]
                    annotation.input_qspec_map[weight] = annotators.change_quantization_config(
                        spec, ch_axis=1
                    )
            return partitions

        return annotate_then_fix

    monkeypatch.setattr(peer_prepare, "_create_obs_or_fq_from_qspec", create_honouring_axis)
    for name in ("conv_transpose_bn", "conv_transpose_bn_relu"):
        annotate = annotators.OP_TO_ANNOTATOR[name]
        monkeypatch.setitem(annotators.OP_TO_ANNOTATOR, name, weight_on_axis_1(annotate))


@pytest.mark.torchao
@pytest.mark.executorch
@pytest.mark.parametrize(("backend", "preset", "seed"), list(_cases()))
def test_random_graph_matches_peer(
    peers, monkeypatch: pytest.MonkeyPatch, backend: str, preset: str, seed: int
) -> None:
    steps = [s.kind for s in RandomGraph(seed).steps]
    if backend == "xnnpack" and not (preset == "qat" and "batch_norm" in steps):
        xnnpack_tests._skip_peer_conv_bn_annotators(monkeypatch)
    reason = _reason(backend, preset, seed, steps)
    difference = compare(backend, preset, seed)
    if reason is None:
        assert difference is None, f"{difference}\n{RandomGraph(seed)}"
        return
    # a documented difference must still show (else the entry is stale: delete it) ...
    assert difference is not None, f"no longer differs: {reason}"
    assert not difference.startswith("only ours fails"), difference
    # ... and vanish once the peer is spared the bug, where that can be arranged
    if reason in (ADAPTIVE_POOL_METADATA, X86_FUNCTIONAL_RELU):  # metadata on the strict IR
        assert compare(backend, preset, seed, peer_strict=True) is None
    if reason is QAT_CONV_TRANSPOSE_AXIS:
        _peer_honours_transposed_weight_axis(monkeypatch)
        assert compare(backend, preset, seed) is None, "differs beyond the weight axis"


@pytest.mark.torchao
@pytest.mark.executorch
def test_peer_still_drops_the_qat_weight_axis(peers) -> None:
    """Pins the root of QAT_CONV_TRANSPOSE_AXIS: the peer's QAT per-channel weight spec, moved
    to axis 1 as ExecuTorch's conv-transpose annotator moves it, still builds a fake quant on
    axis 0. When this fails the peer is fixed: drop the rule and its KNOWN entries."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as peer
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer_utils as annotators
    from torchao.quantization.pt2e import prepare as peer_prepare

    config = peer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    spec = annotators.change_quantization_config(config.weight, ch_axis=1)
    assert spec.ch_axis == 1
    fake_quant = peer_prepare._create_obs_or_fq_from_qspec(spec, {}, True)
    assert fake_quant.ch_axis == 0


class InplaceAfterEvalDropout(nn.Module):
    """Minimal model of seed 160::

    a = x * 2 ─ dropout(eval) ─ hardtanh_ ─┐   (eval dropout returns ``a`` itself,
              └─────────────────────────── mul   so hardtanh_ clamps ``a`` in place)
    """

    def forward(self, x: Tensor) -> Tensor:
        a = x * 2.0
        b = F.dropout(a, 0.5, training=False)
        F.hardtanh_(b)
        return b * a


def test_minimal_inplace_after_eval_dropout() -> None:
    """Needs no peer: prepare alone (nothing annotated) must not change the float result
    (the FIXED_DEFECTS seed, minimised)."""
    from pt2e_quant import prepare_pt2e

    x = torch.linspace(-3, 3, 8)
    model = InplaceAfterEvalDropout().eval()
    exported = torch.export.export(model, (x,)).module()
    assert torch.equal(exported(x), model(x))
    prepared = prepare_pt2e(exported, XNNPACKQuantizer().set_global(None))
    assert torch.equal(prepared(x), model(x))
