"""Models whose compute sits inside higher-order-op bodies or grad-mode regions.

Each wraps one small linear in a different construct (``no_grad``, ``cond``, ``scan``,
``while_loop``), to check that quantization reaches inside the bodies, that prepared models
run them (also under autograd, for QAT) and that converted ones re-export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan
from torch._higher_order_ops.while_loop import while_loop

__all__ = ["CondLinear", "NoGradLinear", "ScanLinear", "WhileLinear"]


class NoGradLinear(nn.Module):
    """A ``@torch.no_grad()`` forward: export wraps it in ``wrap_with_set_grad_enabled``.

    ::

        x (2,8) ─ [no_grad: Linear(8→8) ─ relu] ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.linear(x))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 8),)


class CondLinear(nn.Module):
    """``torch.cond`` choosing between two linears: both branch bodies need q/dq.

    ::

        x (2,4) ─ cond(x.sum() > 0) ─┬ true:  Linear_a(4→4)
                                     └ false: Linear_b(4→4) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear_a = nn.Linear(4, 4)
        self.linear_b = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cond(x.sum() > 0, self.linear_a, self.linear_b, (x,))

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 4),)


class ScanLinear(nn.Module):
    """``scan`` whose combine body runs a linear on every step (an RNN-like carry).

    ::

        xs (3,2,4) ─ scan over dim 0:  carry' = tanh(Linear(4→4)(x) + carry);  y = carry'
                   ─ ys (3,2,4)
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def _step(self, carry: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        next_carry = torch.tanh(self.linear(x) + carry)
        return next_carry, next_carry.clone()

    def forward(self, xs: Tensor) -> Tensor:
        _, ys = scan(self._step, torch.zeros_like(xs[0]), xs)
        return ys

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(3, 2, 4),)


class WhileLinear(nn.Module):
    """``while_loop`` applying one linear a fixed number of times (counter carried as tensor).

    ::

        (i=0, x (2,4)) ─ while i < steps:  (i + 1, tanh(Linear(4→4)(x))) ─ out x
    """

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.linear = nn.Linear(4, 4)

    def _cond(self, i: Tensor, x: Tensor) -> Tensor:
        return i < self.steps

    def _body(self, i: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return i + 1, torch.tanh(self.linear(x))

    def forward(self, x: Tensor) -> Tensor:
        counter = torch.zeros((), dtype=torch.int64)
        _, out = while_loop(self._cond, self._body, (counter, x))
        return out

    def example_inputs(self) -> tuple[Tensor, ...]:
        return (torch.randn(2, 4),)
