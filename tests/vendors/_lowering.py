"""Lowering a converted module with a vendor's ExecuTorch backend, the same way for both pipelines.

The differential vendor tests lower torchao's and our converted module with the same call and
compare what the backend made of each: :func:`lowered_counts` counts the top-level calls of
the lowered program (``executorch_call_delegate`` per delegated partition, every op left
outside a delegate, the q/dq ops among them), and :func:`delegates` hands out the lowered
partitions, whose ``processed_bytes`` a runtime loads. The recipes are the ones the vendor
environment tests pin (``test_tosa_environment.py``, ``test_cortex_m_environment.py``,
``test_openvino_environment.py``).
"""

from __future__ import annotations

import operator
from collections import Counter
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.fx import GraphModule

from tests.vendors._overlay import require_vendor


def lowered_counts(program: ExportedProgram) -> Counter:
    """Top-level ``call_function`` calls of a lowered program by op name (``getitem`` of a
    delegate's outputs excluded): ``executorch_call_delegate`` and whatever no delegate took."""
    return Counter(
        getattr(node.target, "__name__", str(node.target))
        for node in program.graph.nodes
        if node.op == "call_function" and node.target is not operator.getitem
    )


def delegates(program: ExportedProgram) -> list[Any]:
    """The lowered partitions (``LoweredBackendModule``) of a program, in name order."""
    graph = program.graph_module
    return [
        getattr(graph, name) for name in sorted(dir(graph)) if name.startswith("lowered_module")
    ]


def lower_tosa(converted: GraphModule, example: tuple, spec: str) -> ExportedProgram:
    """``to_edge_transform_and_lower`` with Arm's TOSAPartitioner for the specification ``spec``."""
    partitioner = require_vendor("executorch.backends.arm.tosa.partitioner")
    compile_spec = require_vendor("executorch.backends.arm.tosa.compile_spec")
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(
        torch.export.export(converted, example),
        partitioner=[partitioner.TOSAPartitioner(compile_spec.TosaCompileSpec(spec))],
    )
    return edge.exported_program()


def lower_cortex_m(converted: GraphModule, example: tuple) -> ExportedProgram:
    """``to_edge`` with the Cortex-M compile config, then the Cortex-M pass manager, which
    rewrites q/dq + compute into ``cortex_m`` ops that run on the host."""
    config = require_vendor("executorch.backends.cortex_m.edge_compile_config")
    passes = require_vendor("executorch.backends.cortex_m.passes.cortex_m_pass_manager")
    from executorch.exir import to_edge

    edge = to_edge(
        torch.export.export(converted, example),
        compile_config=config.cortex_m_edge_compile_config(),
    )
    return passes.CortexMPassManager(edge.exported_program()).transform()


def lower_openvino(converted: GraphModule, example: tuple) -> ExportedProgram:
    """``to_edge_transform_and_lower`` with the OpenvinoPartitioner for the CPU, without the
    core-ATen check (INT4 packs weights with ``bitwise_right_shift``), under ``no_grad``."""
    partitioner = require_vendor("executorch.backends.openvino.partitioner")
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    with torch.no_grad():
        edge = to_edge_transform_and_lower(
            torch.export.export(converted, example),
            partitioner=[partitioner.OpenvinoPartitioner([CompileSpec("device", b"CPU")])],
            compile_config=EdgeCompileConfig(_check_ir_validity=False),
        )
    return edge.exported_program()
