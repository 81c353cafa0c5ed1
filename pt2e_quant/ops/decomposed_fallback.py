"""Our own registration of the ``quantized_decomposed`` operators, for a torch that lacks them.

Convert emits ``torch.ops.quantized_decomposed.*`` calls and Inductor / ExecuTorch recognise
quantized regions by those exact overloads, so the schemas here must be character-for-character
the ones torch 2.13 defines in ``torch/ao/quantization/fx/_decomposed.py``; the bit-exact kernels
behind them live in :mod:`pt2e_quant.ops.decomposed_kernels` and
:mod:`pt2e_quant.ops.decomposed_token_kernels`.

Nothing here runs on import: :func:`register_missing` is called by
:func:`pt2e_quant.ops.compat.ensure_quantized_decomposed_ops` only when torch's module cannot be
imported, and it defines just the overloads nobody has defined yet, because defining an
existing schema a second time is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.library import Library

from pt2e_quant.ops.decomposed_kernels import (
    FakeQuantPerChannelFunction,
    choose_qparams_kernel,
    choose_qparams_tensor_meta,
    convert_element_type,
    dequantize_per_channel,
    dequantize_per_channel_meta,
    dequantize_per_tensor,
    dequantize_per_tensor_meta,
    dequantize_per_tensor_tensor_meta,
    from_tensor_qparams,
    qparams_meta,
    quantize_per_channel,
    quantize_per_channel_meta,
    quantize_per_tensor,
    quantize_per_tensor_meta,
    quantize_per_tensor_tensor_meta,
)
from pt2e_quant.ops.decomposed_token_kernels import (
    choose_qparams_per_token,
    choose_qparams_per_token_asymmetric,
    dequantize_per_channel_group,
    dequantize_per_token,
    dequantize_per_token_meta,
    per_token_qparams_meta,
    quantize_per_channel_group,
    quantize_per_channel_group_meta,
    quantize_per_token,
    quantize_per_token_meta,
)

__all__ = ["NAMESPACE", "OP_SPECS", "OpSpec", "expected_schemas", "register_missing"]

NAMESPACE = "quantized_decomposed"

# --- the table, and registration ------------------------------------------------------------

_CEA = "CompositeExplicitAutograd"


@dataclass(frozen=True)
class OpSpec:
    """One overload: its definition (without namespace) and its kernel per dispatch key."""

    name: str
    overload: str
    schema: str
    kernels: tuple[tuple[str, Callable[..., object]], ...]

    @property
    def qualified_schema(self) -> str:
        """What ``str(torch.ops.quantized_decomposed.<name>.<overload>._schema)`` prints."""
        return f"{NAMESPACE}::{self.schema}"


def _spec(
    schema: str, real: Callable[..., object], meta: Callable[..., object] | None, key: str = _CEA
) -> OpSpec:
    qualified = schema.split("(", 1)[0]
    name, _, overload = qualified.partition(".")
    kernels = ((key, real),) if meta is None else ((key, real), ("Meta", meta))
    return OpSpec(name, overload or "default", schema, kernels)


_PER_TENSOR_ARGS = "int quant_min, int quant_max, ScalarType dtype"
_TENSOR2_ARGS = "Tensor quant_min, Tensor quant_max, ScalarType dtype"
_OUT_DTYPE = "*, ScalarType? out_dtype=None"
_QPARAMS = "(Tensor, Tensor)"

#: Every overload torch 2.13 defines in the namespace, in its order.
OP_SPECS: tuple[OpSpec, ...] = (
    _spec(
        "quantize_per_tensor(Tensor input, float scale, int zero_point, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        quantize_per_tensor,
        quantize_per_tensor_meta,
    ),
    _spec(
        "quantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        from_tensor_qparams(quantize_per_tensor),
        quantize_per_tensor_tensor_meta,
    ),
    _spec(
        "quantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_TENSOR2_ARGS}) -> Tensor",
        from_tensor_qparams(quantize_per_tensor),
        quantize_per_tensor_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor(Tensor input, float scale, int zero_point, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        dequantize_per_tensor,
        dequantize_per_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor.tensor(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        from_tensor_qparams(dequantize_per_tensor),
        dequantize_per_tensor_tensor_meta,
    ),
    _spec(
        "dequantize_per_tensor.tensor2(Tensor input, Tensor scale, Tensor zero_point, "
        f"{_TENSOR2_ARGS}, {_OUT_DTYPE}) -> Tensor",
        from_tensor_qparams(dequantize_per_tensor),
        dequantize_per_tensor_tensor_meta,
    ),
    _spec(
        "choose_qparams.tensor(Tensor input, int quant_min, int quant_max, float eps, "
        f"ScalarType dtype) -> {_QPARAMS}",
        choose_qparams_kernel(False),
        choose_qparams_tensor_meta,
    ),
    _spec(
        "choose_qparams_symmetric.tensor(Tensor input, int quant_min, int quant_max, "
        f"float eps, ScalarType dtype) -> {_QPARAMS}",
        choose_qparams_kernel(True),
        qparams_meta,
    ),
    _spec(
        "quantize_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        quantize_per_channel,
        quantize_per_channel_meta,
    ),
    _spec(
        "dequantize_per_channel(Tensor input, Tensor scales, Tensor? zero_points, int axis, "
        f"{_PER_TENSOR_ARGS}, {_OUT_DTYPE}) -> Tensor",
        dequantize_per_channel,
        dequantize_per_channel_meta,
    ),
    _spec(
        f"choose_qparams_per_token(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        choose_qparams_per_token,
        per_token_qparams_meta,
    ),
    # Composite-implicit: it decomposes into aten ops wherever it is called directly.
    _spec(
        f"_choose_qparams_per_token_asymmetric_impl(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        choose_qparams_per_token_asymmetric,
        None,
        key="CompositeImplicitAutograd",
    ),
    _spec(
        f"choose_qparams_per_token_asymmetric(Tensor input, ScalarType dtype) -> {_QPARAMS}",
        choose_qparams_per_token_asymmetric,
        per_token_qparams_meta,
    ),
    _spec(
        "quantize_per_token(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}) -> Tensor",
        quantize_per_token,
        quantize_per_token_meta,
    ),
    _spec(
        "dequantize_per_token(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}, ScalarType output_dtype) -> Tensor",
        dequantize_per_token,
        dequantize_per_token_meta,
    ),
    _spec(
        "quantize_per_channel_group(Tensor input, Tensor scales, Tensor zero_points, "
        f"{_PER_TENSOR_ARGS}, int group_size) -> Tensor",
        quantize_per_channel_group,
        quantize_per_channel_group_meta,
    ),
    # torch registers no Meta kernel here either; the composite kernel traces under fake mode.
    _spec(
        "dequantize_per_channel_group(Tensor input, Tensor scales, Tensor? zero_points, "
        f"{_PER_TENSOR_ARGS}, int group_size, ScalarType output_dtype) -> Tensor",
        dequantize_per_channel_group,
        None,
    ),
    # An Autograd kernel, so the straight-through gradient survives; Meta for tracing.
    _spec(
        "fake_quant_per_channel(Tensor input, Tensor scales, Tensor zero_points, int axis, "
        "int quant_min, int quant_max) -> Tensor",
        FakeQuantPerChannelFunction.apply,
        lambda input, *_: torch.empty_like(input),
        key="Autograd",
    ),
    _spec(
        "convert_element_type.no_fuse(Tensor input, ScalarType dtype) -> Tensor",
        convert_element_type,
        lambda input, dtype: torch.empty_like(input, dtype=dtype),
    ),
)


def expected_schemas() -> dict[str, str]:
    """``"name.overload"`` -> the schema string torch 2.13 prints for it."""
    return {f"{spec.name}.{spec.overload}": spec.qualified_schema for spec in OP_SPECS}


def _is_defined(spec: OpSpec) -> bool:
    """Whether anyone (torch, torchao, ExecuTorch, an earlier call) already defined it."""
    try:
        packet = getattr(getattr(torch.ops, NAMESPACE), spec.name)
        getattr(packet, spec.overload)
    except (AttributeError, RuntimeError):
        return False
    return True


#: Kept alive for the life of the process: dropping a Library unregisters what it defined.
_LIBRARIES: list[Library] = []


def register_missing() -> tuple[str, ...]:
    """Define every overload of :data:`OP_SPECS` that is not defined yet; returns their names.

    A ``FRAGMENT`` library is used so the namespace is not claimed exclusively: another
    package defining the rest of it must still be able to.
    """
    missing = [spec for spec in OP_SPECS if not _is_defined(spec)]
    if not missing:
        return ()
    library = Library(NAMESPACE, "FRAGMENT")
    _LIBRARIES.append(library)
    for spec in missing:
        library.define(spec.schema)
        qualified = spec.name if spec.overload == "default" else f"{spec.name}.{spec.overload}"
        for key, kernel in spec.kernels:
            library.impl(qualified, kernel, key)
    return tuple(f"{spec.name}.{spec.overload}" for spec in missing)
