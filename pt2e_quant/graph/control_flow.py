"""What pt2e_quant needs to know about each control-flow higher-order op, as one table.

Two facts per op:

* its *dense kernel*, which runs the bodies as plain Python. In a prepared model the bodies
  contain observers / fake-quants, whose Python control flow on tensor values cannot be traced;
  but ``torch.cond`` and ``scan`` trace their bodies (make_fx) whenever autograd is involved.
  Prepared models therefore call :func:`eager_cond` & co., which run the dense kernel: the body
  ops still record autograd, so QAT gradients flow. convert puts the real ops back.
* where its operands and bodies sit in the argument list, so constants a body reads through
  get_attr (per-channel scales, folded weights) can be lifted into operands: a body must not
  hold real tensors for re-export, tracing under autograd, or ``torch.export.save``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pt2e_quant.ops.compat import dense_kernel

__all__ = ["ControlFlowOp", "CONTROL_FLOW_OPS", "control_flow_op_for", "eager_stand_in_for"]


@dataclass(frozen=True)
class ControlFlowOp:
    """Argument layout of one higher-order op: where the bodies and the extra operands go."""

    op: torch._ops.HigherOrderOperator
    body_arg_indices: tuple[int, ...]
    #: index of the tuple/list argument passed as trailing placeholders to every body
    operands_arg_index: int


def _higher_order(name: str) -> torch._ops.HigherOrderOperator | None:
    return getattr(torch.ops.higher_order, name, None)


def _rows() -> tuple[ControlFlowOp, ...]:
    layout = {
        # cond(pred, true_fn, false_fn, operands)
        "cond": ((1, 2), 3),
        # map_impl(f, xs, pos_args)
        "map_impl": ((0,), 2),
        # scan(combine_fn, init, xs, additional_inputs)
        "scan": ((0,), 3),
        # while_loop(cond_fn, body_fn, carried_inputs, additional_inputs)
        "while_loop": ((0, 1), 3),
    }
    rows = []
    for name, (bodies, operands) in layout.items():
        op = _higher_order(name)
        if op is not None:
            rows.append(ControlFlowOp(op, bodies, operands))
    return tuple(rows)


CONTROL_FLOW_OPS: tuple[ControlFlowOp, ...] = _rows()


def control_flow_op_for(target: object) -> ControlFlowOp | None:
    """The table row of a higher-order op, or None for other targets."""
    for row in CONTROL_FLOW_OPS:
        if row.op is target:
            return row
    return None


def eager_cond(*args):
    """``torch.cond`` with its bodies run as Python (see module docstring)."""
    return dense_kernel(torch.ops.higher_order.cond)(*args)


def eager_map_impl(*args):
    """``map_impl`` with its body run as Python."""
    return dense_kernel(torch.ops.higher_order.map_impl)(*args)


def eager_scan(*args):
    """``scan`` with its body run as Python."""
    return dense_kernel(torch.ops.higher_order.scan)(*args)


def eager_while_loop(*args):
    """``while_loop`` with its bodies run as Python."""
    return dense_kernel(torch.ops.higher_order.while_loop)(*args)


_EAGER = {
    "cond": eager_cond,
    "map_impl": eager_map_impl,
    "scan": eager_scan,
    "while_loop": eager_while_loop,
}
_STAND_IN_FOR = {
    _higher_order(name): fn for name, fn in _EAGER.items() if _higher_order(name) is not None
}
_REAL_OP_FOR = {fn: op for op, fn in _STAND_IN_FOR.items()}


def eager_stand_in_for(target: object):
    """The eager stand-in of a control-flow op, or None."""
    return _STAND_IN_FOR.get(target)


def real_op_for(target: object):
    """The control-flow op an eager stand-in replaced, or None."""
    return _REAL_OP_FOR.get(target)
