"""Running a calibrated prepared model again, as the float model or as the converted model will
compute, without moving a single observer statistic.

Algorithms that edit a calibrated model before convert (bias correction) need more passes over
data, but calling the prepared model would feed those batches to its observers. A
:class:`PreparedRun` interprets the top-level graph with every observer call either skipped
(the float model) or replaced by the rounding convert will put there (``simulate=True``:
:mod:`.simulated_observers`), and hands chosen nodes' resolved arguments and results to a
callback; :func:`observers_bypassed` also turns the observers of control-flow bodies, which
the interpreter runs as opaque modules, into pass-throughs. The interpreter frees each value
after its last reader, so a run holds no more activations than the model's own forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from typing import Any

import torch
from torch.fx import GraphModule, Interpreter, Node

from pt2e_quant.algorithms.simulated_observers import (
    Simulator,
    UnsimulatedObserverError,
    simulator_for,
)
from pt2e_quant.fake_quantize import is_observer_or_fake_quant
from pt2e_quant.pipeline.calibration import CalibrationError, describe_shapes

__all__ = ["NodeCallback", "PreparedRun", "observers_bypassed", "run_batches"]

#: (node, its resolved args, its resolved kwargs, its result) -> None
NodeCallback = Callable[[Node, tuple, dict, Any], None]


class _Stop(Exception):
    """Raised after the last node a run needs."""


def _same(x: torch.Tensor) -> torch.Tensor:
    return x


class PreparedRun(Interpreter):
    """One interpreter over a prepared model's top-level graph.

    ``on_node`` sees each node of ``watched`` once it has run; ``simulate`` replaces each
    observer by convert's rounding (an observer that lowers itself stays a pass-through);
    ``stop_after`` ends each run right after that node.
    """

    def __init__(
        self,
        gm: GraphModule,
        watched: Collection[Node],
        on_node: NodeCallback,
        *,
        simulate: bool = False,
        stop_after: Node | None = None,
    ) -> None:
        super().__init__(gm)
        self.watched = set(watched)
        self.on_node = on_node
        self.simulators: dict[str, Simulator] | None = {} if simulate else None
        self.stop_after = stop_after

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if not is_observer_or_fake_quant(module):
            return super().call_module(target, args, kwargs)
        if self.simulators is None:
            return args[0]
        if target not in self.simulators:
            try:
                self.simulators[target] = simulator_for(module)
            except UnsimulatedObserverError:
                self.simulators[target] = _same
        return self.simulators[target](args[0])

    def run_node(self, node: Node) -> Any:
        if node not in self.watched:
            result = super().run_node(node)
        else:
            args, kwargs = self.fetch_args_kwargs_from_env(node)
            result = node.target(*args, **kwargs)
            self.on_node(node, args, kwargs, result)
        if node is self.stop_after:
            raise _Stop
        return result


@contextlib.contextmanager
def observers_bypassed(gm: GraphModule) -> Iterator[None]:
    """Make every observer of ``gm`` (control-flow bodies included) a pass-through meanwhile."""
    patched = [m for m in gm.modules() if is_observer_or_fake_quant(m)]
    own = [m.__dict__.get("forward") for m in patched]  # an instance-level forward, if any
    for module in patched:
        module.forward = _same
    try:
        yield
    finally:
        for module, forward in zip(patched, own, strict=True):
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def run_batches(run: PreparedRun, batches: list[tuple], api: str) -> None:
    """Run every batch; a batch the model rejects raises ``CalibrationError`` naming it."""
    with torch.no_grad():
        for index, batch in enumerate(batches):
            try:
                run.run(*batch)
            except _Stop:
                pass
            except Exception as error:
                first_line = (str(error).strip().splitlines() or [""])[0]
                raise CalibrationError(
                    f"{api}: the prepared model rejected batches[{index}] (inputs "
                    f"{describe_shapes(batch)}): {first_line}; pass batches shaped like the "
                    "calibration data"
                ) from error
