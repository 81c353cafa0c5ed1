"""Weight-only presets for ExecuTorch: int8 linears and quantized embedding tables.

XNNPACK has no weight-only kernels: it has no embedding at all, and a linear whose weight is
dequantized but whose input is float is not a quantized pattern to it. What runs these models
is ExecuTorch's portable quantized kernels, so the presets here offer exactly the schemes those
kernels run, measured with ExecuTorch 1.5.1:

* **linears, int8 per output channel** (:func:`get_weight_only_quantization_config`): the
  weight stays an int8 table and ``dequantize_per_channel.out`` (portable) expands it before
  the matrix product. XNNPACK's default partitioner must not see it: it takes the dequantize
  and the ``mm`` as a float linear and computes with the raw integers (outputs off by about
  1/scale). Lower with ``XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)``
  (:func:`needs_non_static_float_weights` tells whether a program needs it); the float
  product then still runs in XNNPACK, fed the dequantized weight.
* **embeddings, uint8 per row** (:func:`get_weight_only_embedding_config`): the Embedding
  backend's scheme (float scale and offset per row). ExecuTorch's ``QuantFusionPass`` turns
  ``dequantize_per_channel(uint8) -> embedding`` into the portable ``embedding_byte``, which
  reads only the looked-up rows; it runs only under
  ``ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)``.

Not offered, each refused with the reason:

* any per-group weight-only scheme: ExecuTorch's portable kernels have no
  ``dequantize_per_channel_group`` (``to_executorch`` fails with "Missing out variants"), and
  under ``do_quant_fusion_and_const_prop`` the constant propagation folds it into a float
  weight, so the program runs but stores float tables. Its ``embedding_byte`` fusion for
  groups matches only a ``getattr(weight, "dtype")`` node that ``torch.export`` never writes;
* 4-bit linears: besides the above, a per-channel 4-bit weight would be stored one value per
  byte and dequantized to float, no smaller than int8 and less accurate. XNNPACK's 4-bit
  kernels take 4-bit weights with int8 per-token activations: 8da4w
  (:func:`~quantizers.xnnpack.quantizer.get_per_token_quantization_config`).
"""

from __future__ import annotations

import functools

import torch
from torch.export import ExportedProgram
from torch.fx import Node

from pt2e_quant.errors import SpecError
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.graph.patterns import is_call
from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.ops import qdq_ops
from pt2e_quant.ops.families import (
    ADDMM_OPS,
    LINEAR_OPS,
    MATRIX_TRANSPOSE_OPS,
    PERMUTE_OPS,
    TRANSPOSE_OPS,
)
from quantizers.config import QuantizationConfig
from quantizers.embedding import get_embedding_quantization_config
from quantizers.xnnpack.quantizer import get_symmetric_quantization_config

__all__ = [
    "get_weight_only_embedding_config",
    "get_weight_only_quantization_config",
    "needs_non_static_float_weights",
]

_PER_GROUP_REFUSED = (
    "ExecuTorch's portable kernels have no dequantize_per_channel_group (to_executorch fails "
    "with 'Missing out variants'; with do_quant_fusion_and_const_prop=True it is folded into "
    "a float weight, so nothing is saved)"
)


def _check_weight_bits(owner: str, weight_bits: object) -> None:
    if isinstance(weight_bits, bool) or weight_bits not in (4, 8):
        raise SpecError(f"{owner}: weight_bits must be 4 or 8, got {weight_bits!r}")


@functools.lru_cache
def get_weight_only_quantization_config(
    weight_bits: int = 8, group_size: int | None = None
) -> QuantizationConfig:
    """int8 symmetric weights, one scale per output channel; activations stay float.

    The weight spec is :func:`get_symmetric_quantization_config`'s per-channel one (-127..127),
    so a model quantized this way stores the same integers as the static preset. The knobs
    mirror :func:`get_per_token_quantization_config`; only ``weight_bits=8, group_size=None``
    has a runtime (see the module docstring), the others raise :class:`SpecError` saying why
    and what to use. Cached, so equal arguments give the same object. Set globally, the
    XNNPACK quantizer also gives convolutions weight-only weights; only linears are measured
    on ExecuTorch here.
    """
    owner = "get_weight_only_quantization_config"
    _check_weight_bits(owner, weight_bits)
    if weight_bits == 4:
        raise SpecError(
            f"{owner}: 4-bit weight-only linears do not run on ExecuTorch: XNNPACK has no "
            f"weight-only kernels and {_PER_GROUP_REFUSED}. Use 8da4w, "
            "get_per_token_quantization_config(weight_bits=4, group_size=32), which XNNPACK "
            "runs with 4-bit weights, or weight_bits=8."
        )
    if group_size is not None:
        raise SpecError(
            f"{owner}: 8-bit weight-only linears are per output channel (group_size=None), got "
            f"group_size={group_size!r}: {_PER_GROUP_REFUSED}."
        )
    weight = get_symmetric_quantization_config(is_per_channel=True).weight
    return QuantizationConfig(None, None, weight, None)


@functools.lru_cache
def get_weight_only_embedding_config(
    weight_bits: int = 8, group_size: int | None = None
) -> QuantizationConfig:
    """Embedding tables for ExecuTorch's ``embedding_byte``: uint8, float scale and offset per
    row, for :class:`~quantizers.embedding.EmbeddingQuantizer`.

    This is the Embedding backend's :func:`get_embedding_quantization_config` (cached here, so
    equal arguments give the same object), the one scheme ExecuTorch's ``QuantFusionPass``
    fuses into a quantized lookup. Compose it before the XNNPACK quantizer, e.g. with 8da4w
    linears::

        ComposableQuantizer([
            EmbeddingQuantizer(get_weight_only_embedding_config()),
            XNNPACKQuantizer().set_global(get_per_token_quantization_config()),
        ])

    and write the program with ``ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)``.
    A table tied to a linear (an lm_head) is quantized once per reader: the lookup reads the
    uint8 table, the linear its own copy in the linear's scheme. Other bit widths and per-group
    scales raise :class:`SpecError` with the reason.
    """
    owner = "get_weight_only_embedding_config"
    _check_weight_bits(owner, weight_bits)
    if weight_bits == 4:
        raise SpecError(
            f"{owner}: 4-bit embeddings need ExecuTorch's embedding_4bit, which takes a packed "
            "table (two values per byte) that only ExecuTorch's own source transformations "
            "and torchao's dequantize_affine fusion produce; the quantized_decomposed ops we "
            f"emit are per group, and {_PER_GROUP_REFUSED}. Use weight_bits=8."
        )
    if group_size is not None:
        raise SpecError(
            f"{owner}: 8-bit embeddings are per row (group_size=None), got "
            f"group_size={group_size!r}: ExecuTorch fuses only a per-row uint8 "
            f"dequantize_per_channel into embedding_byte, and {_PER_GROUP_REFUSED}."
        )
    return get_embedding_quantization_config()


# ------------------------------------------------------------------------------ lowering


_WEIGHT_VIEWS = PERMUTE_OPS | TRANSPOSE_OPS | MATRIX_TRANSPOSE_OPS


def _dequantized_weight(weight: object) -> bool:
    while isinstance(weight, Node) and is_call(weight, _WEIGHT_VIEWS):
        weight = weight.args[0]
    return qdq_ops.is_dequantize(weight)


def _is_weight_only_linear(node: Node) -> bool:
    """A linear / addmm whose weight is dequantized and whose input is not."""
    if is_call(node, LINEAR_OPS):
        activation, weight = argument(node, "input"), argument(node, "weight")
    elif is_call(node, ADDMM_OPS):
        activation, weight = node.args[1], node.args[2]
    else:
        return False
    return _dequantized_weight(weight) and not qdq_ops.is_dequantize(activation)


def needs_non_static_float_weights(program: ExportedProgram | torch.fx.GraphModule) -> bool:
    """Whether ``program`` has a weight-only quantized linear, which XNNPACK's default
    partitioner miscompiles (ExecuTorch 1.5.1).

    The partitioner delegates ``dequantize_per_channel -> permute -> mm`` as a float linear
    with a static weight and hands XNNPACK the int8 table unscaled. With
    ``XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)`` the dequantize stays
    on the portable kernels and the product gets its result as a run-time input.
    """
    gm = program.graph_module if isinstance(program, ExportedProgram) else program
    return any(
        _is_weight_only_linear(node)
        for module in iter_graph_modules(gm)
        for node in module.graph.nodes
    )
