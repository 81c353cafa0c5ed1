"""A seeded generator of small random models from the ops the backend quantizers cover.

The zoo differentials (test_xnnpack_executorch_parity.py, test_x86_inductor_torchao_parity.py)
pin a fixed set of models; the random-graph differential (test_random_graph_matches_peers.py)
needs models nobody picked by hand, to reach pattern combinations the zoo misses. :class:`RandomGraph` draws them from convs
with and without bias, depthwise and transposed convs, conv -> batch norm, linear, a dozen
activations in module / functional / in-place spellings, residual add / mul, scalar add / mul,
cat, pools, mean, views, slices, dropout and matmul, with shapes kept consistent. A model is a
function of its seed alone, so a failing seed is its own reproduction.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shape = tuple[int, ...]


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
