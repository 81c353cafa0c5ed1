"""One annotation, expressible with our classes or torchao's, for differential tests and benchmarks.

torchao's prepare/convert only accept torchao's spec and observer classes, and ours accept
ours (and torch.ao's observers), so "the same annotation applied through both pipelines" means
building the same decisions from each library's classes. :class:`Int8Annotator` makes the
XNNPACK-style decisions (int8 per-tensor activations, int8 per-channel symmetric weights):

* conv / linear: input and weight quantized; output quantized unless a relu follows, in which
  case the relu's output is (conv -> relu fused);
* add / mul: both tensor inputs and the output;
* max_pool2d, adaptive/avg pool, flatten, cat: output shares the input's qparams.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten

CONV_LINEAR = (
    aten.conv1d.default,
    aten.conv2d.default,
    aten.conv_transpose2d.input,
    aten.linear.default,
)
RELUS = (aten.relu.default, aten.relu_.default)
BINARY = (aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor)
SHARED_OUTPUT = (
    aten.max_pool2d.default,
    aten.adaptive_avg_pool2d.default,
    aten.avg_pool2d.default,
    aten.flatten.using_ints,
    aten.mean.dim,
)


def library(name: str) -> SimpleNamespace:
    """Spec classes, observers and pipeline functions of ``"pt2e_quant"`` or ``"torchao"``."""
    if name == "pt2e_quant":
        api = importlib.import_module("pt2e_quant")
        observers: ModuleType = importlib.import_module("pt2e_quant.observer")
        return SimpleNamespace(
            name=name,
            api=api,
            observers=observers,
            prepare_pt2e=api.prepare_pt2e,
            prepare_qat_pt2e=api.prepare_qat_pt2e,
            convert_pt2e=api.convert_pt2e,
        )
    if name == "torchao":
        api = importlib.import_module("torchao.quantization.pt2e.quantizer")
        observers = importlib.import_module("torchao.quantization.pt2e.observer")
        pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        return SimpleNamespace(
            name=name,
            api=api,
            observers=observers,
            prepare_pt2e=pipeline.prepare_pt2e,
            prepare_qat_pt2e=pipeline.prepare_qat_pt2e,
            convert_pt2e=pipeline.convert_pt2e,
        )
    raise ValueError(f"unknown library {name!r}")


@dataclass
class Int8Specs:
    activation: Any
    weight: Any


def int8_specs(lib: SimpleNamespace, per_channel: bool = True) -> Int8Specs:
    spec = lib.api.QuantizationSpec
    activation = spec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=lib.observers.HistogramObserver.with_args(eps=2**-12),
    )
    weight = spec(
        dtype=torch.int8,
        quant_min=-127,
        quant_max=127,
        qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric,
        ch_axis=0 if per_channel else None,
        is_dynamic=False,
        observer_or_fake_quant_ctr=(
            lib.observers.PerChannelMinMaxObserver if per_channel else lib.observers.MinMaxObserver
        ),
    )
    return Int8Specs(activation, weight)


def _only_relu_user(node: Node) -> Node | None:
    users = list(node.users)
    if len(users) == 1 and users[0].target in RELUS:
        return users[0]
    return None


def make_int8_quantizer(lib: SimpleNamespace, per_channel: bool = True):
    """A Quantizer subclass instance of ``lib`` applying the module docstring's decisions."""
    specs = int8_specs(lib, per_channel)
    annotation = lib.api.QuantizationAnnotation
    shared = lib.api.SharedQuantizationSpec

    class Int8Annotator(lib.api.Quantizer):
        def annotate(self, model: GraphModule) -> GraphModule:
            for node in model.graph.nodes:
                if node.op != "call_function" or "quantization_annotation" in node.meta:
                    continue
                if node.target in CONV_LINEAR:
                    relu = _only_relu_user(node)
                    node.meta["quantization_annotation"] = annotation(
                        input_qspec_map={
                            node.args[0]: specs.activation,
                            node.args[1]: specs.weight,
                        },
                        output_qspec=None if relu is not None else specs.activation,
                        _annotated=True,
                    )
                    if relu is not None:
                        relu.meta["quantization_annotation"] = annotation(
                            output_qspec=specs.activation, _annotated=True
                        )
                elif node.target in BINARY:
                    tensors = [a for a in node.args[:2] if isinstance(a, Node)]
                    if len(tensors) != 2:
                        continue
                    node.meta["quantization_annotation"] = annotation(
                        input_qspec_map={a: specs.activation for a in tensors},
                        output_qspec=specs.activation,
                        _annotated=True,
                    )
                elif node.target in SHARED_OUTPUT:
                    x = node.args[0]
                    node.meta["quantization_annotation"] = annotation(
                        input_qspec_map={x: specs.activation},
                        output_qspec=shared((x, node)),
                        _annotated=True,
                    )
            return model

        def validate(self, model: GraphModule) -> None:
            return None

    return Int8Annotator()
