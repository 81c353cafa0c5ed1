"""Weight-only presets lowered to ExecuTorch and run by its runtime (ExecuTorch 1.5.1).

* int8 per-channel linears (``get_weight_only_quantization_config``): the weight's
  ``dequantize_per_channel`` runs on the portable kernels, the float product in XNNPACK,
  provided the partitioner is built with ``force_non_static_weights_for_f32_linear=True``;
  the default partitioner delegates the dequantize as a float weight and gets the wrong
  answer (a canary test pins that, so a fixed ExecuTorch shows up here).
* uint8 per-row embeddings (``get_weight_only_embedding_config``): fused into the portable
  ``embedding_byte`` under ``do_quant_fusion_and_const_prop=True``.
* The Llama-style decoder (lm_head tied to the embedding) with 8da4w or weight-only linears
  and a quantized embedding lowers and runs.
* Why per-group weight-only is refused: no out variant, and const-prop stores it as float.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import pt2e_quant
from pt2e_quant.contract.specs import QuantizationSpec
from pt2e_quant.observer import PerGroupMinMaxObserver
from quantizers import (
    ComposableQuantizer,
    EmbeddingQuantizer,
    QuantizationConfig,
    XNNPACKQuantizer,
    get_per_token_quantization_config,
    get_weight_only_embedding_config,
    get_weight_only_quantization_config,
)
from quantizers.xnnpack import needs_non_static_float_weights
from quantizers.xnnpack.backend import BACKEND
from tests.models import export_model
from tests.models.zoo_decoder import LlamaStyleDecoder

pytestmark = pytest.mark.executorch
pytest.importorskip("executorch")

import executorch.kernels.quantized  # noqa: E402, F401  (registers the portable quantized ops)
from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: E402
    XnnpackPartitioner,
)
from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402

FUSE = ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)


def _run(buffer: bytes, inputs: tuple) -> torch.Tensor:
    program = Runtime.get().load_program(buffer)  # the method needs its program alive
    return program.load_method("forward").execute(list(inputs))[0]


def _ops(manager) -> list[str]:
    """Call targets as ``namespace.op.overload`` (edge ops print their schema too)."""
    graph = manager.exported_program().graph_module.graph
    names = []
    for node in graph.nodes:
        if node.op == "call_function":
            name = str(node.target)
            names.append(name.removeprefix("<EdgeOpOverload: ").split(">")[0])
    return names


class _ProjectedLookup(nn.Module):
    """ids ─ Embedding(32, 64) ─ Linear(64, 16, bias)"""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(32, 64)
        self.proj = nn.Linear(64, 16)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.table(ids))


def _quantize(model: nn.Module, inputs: tuple, quantizers: list) -> torch.fx.GraphModule:
    prepared = pt2e_quant.prepare_pt2e(export_model(model, inputs), ComposableQuantizer(quantizers))
    prepared(*inputs)
    return pt2e_quant.convert_pt2e(prepared)


def _linear_only(weight_only: bool = True):
    torch.manual_seed(0)
    model = nn.Linear(64, 16).eval()
    inputs = (torch.randn(1, 8, 64),)
    config = get_weight_only_quantization_config()
    converted = _quantize(model, inputs, [XNNPACKQuantizer().set_global(config)])
    return converted, inputs, torch.export.export(converted, inputs)


def test_weight_only_linear_runs_with_the_dequantize_on_portable_kernels():
    converted, inputs, program = _linear_only()
    assert needs_non_static_float_weights(program)
    partitioner = XnnpackPartitioner(force_non_static_weights_for_f32_linear=True)
    edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
    ops = _ops(edge)
    assert "quantized_decomposed.dequantize_per_channel.default" in ops  # outside the delegate
    assert "executorch_call_delegate" in ops  # the float product, in XNNPACK
    manager = edge.to_executorch()
    assert "quantized_decomposed.dequantize_per_channel.out" in _ops(manager)
    torch.testing.assert_close(_run(manager.buffer, inputs), converted(*inputs))


def test_canary_default_partitioner_miscomputes_weight_only_linears():
    """ExecuTorch 1.5.1's default XnnpackPartitioner takes ``dequantize -> permute -> mm`` as
    a float linear and feeds XNNPACK the unscaled int8 table (outputs off by ~1/scale). If this
    fails, ExecuTorch fixed it and ``needs_non_static_float_weights`` can go."""
    converted, inputs, program = _linear_only()
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    assert "quantized_decomposed.dequantize_per_channel.default" not in _ops(edge)
    error = (_run(edge.to_executorch().buffer, inputs) - converted(*inputs)).abs().max()
    assert error > 10 * converted(*inputs).abs().max()


def test_backend_write_pte_lowers_weight_only_linears_correctly(tmp_path):
    converted, inputs, program = _linear_only()
    path = tmp_path / "weight_only.pte"
    BACKEND.write_pte(program, path)
    torch.testing.assert_close(_run(path.read_bytes(), inputs), converted(*inputs))


def test_uint8_embedding_fuses_into_embedding_byte_and_runs():
    torch.manual_seed(0)
    model = _ProjectedLookup().eval()
    inputs = (torch.randint(0, 32, (1, 8)),)
    converted = _quantize(model, inputs, [EmbeddingQuantizer(get_weight_only_embedding_config())])
    edge = to_edge_transform_and_lower(torch.export.export(converted, inputs))
    manager = edge.to_executorch(FUSE)
    ops = _ops(manager)
    assert ops.count("quantized_decomposed.embedding_byte.out") == 1
    assert not any("dequantize" in op or "aten.embedding" in op for op in ops)
    torch.testing.assert_close(_run(manager.buffer, inputs), converted(*inputs))


def test_per_group_weight_only_has_no_runtime_only_a_float_table():
    """The evidence behind refusing per-group weight-only schemes: without fusion,
    ``to_executorch`` has no out variant; with it, const-prop folds the table to float."""
    spec = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-8,
        quant_max=7,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=PerGroupMinMaxObserver.with_args(group_size=32),
    )
    model = _ProjectedLookup().eval()
    inputs = (torch.randint(0, 32, (1, 8)),)
    config = QuantizationConfig(None, None, spec, None)
    converted = _quantize(model, inputs, [EmbeddingQuantizer(config)])
    program = torch.export.export(converted, inputs)
    with pytest.raises(RuntimeError, match="Missing out variants.*dequantize_per_channel_group"):
        to_edge_transform_and_lower(program).to_executorch()
    fused = to_edge_transform_and_lower(program).to_executorch(FUSE)
    ops = _ops(fused)
    assert "aten.embedding.out" in ops
    assert not any("embedding_byte" in op or "dequantize" in op for op in ops)


# ------------------------------------------------------------------------- the decoder


LINEAR_PRESETS = {
    "8da4w": lambda: get_per_token_quantization_config(weight_bits=4, group_size=32),
    "int8 weight-only": get_weight_only_quantization_config,
}


@functools.cache
def _decoder(preset: str):
    torch.manual_seed(0)
    model = LlamaStyleDecoder().eval()
    inputs = model.example_inputs()
    quantizers = [
        EmbeddingQuantizer(get_weight_only_embedding_config()),
        XNNPACKQuantizer().set_global(LINEAR_PRESETS[preset]()),
    ]
    converted = _quantize(model, inputs, quantizers)
    program = torch.export.export(converted, inputs)
    partitioner = XnnpackPartitioner(
        force_non_static_weights_for_f32_linear=needs_non_static_float_weights(program)
    )
    edge = to_edge_transform_and_lower(program, partitioner=[partitioner])
    return model, inputs, converted, edge.to_executorch(FUSE)


@pytest.mark.parametrize("preset", sorted(LINEAR_PRESETS))
def test_decoder_with_quantized_embedding_lowers_to_embedding_byte(preset):
    *_, manager = _decoder(preset)
    ops = _ops(manager)
    assert ops.count("quantized_decomposed.embedding_byte.out") == 1
    assert "aten.embedding.out" not in ops
    weight_dequantizes = ops.count("quantized_decomposed.dequantize_per_channel.out")
    assert weight_dequantizes == (0 if preset == "8da4w" else 2 * 7 + 1)


def test_decoder_8da4w_with_int8_embedding_matches_our_module_within_one_activation_step():
    """As in test_xnnpack_per_token_lowering: XNNPACK picks its own per-token qparams, so
    each logit may differ by one step of the lm_head input times the head's weights."""
    model, inputs, converted, manager = _decoder("8da4w")
    theirs, ours = _run(manager.buffer, inputs), converted(*inputs)
    captured = {}
    hook = model.norm.register_forward_hook(lambda module, args, out: captured.setdefault("x", out))
    with torch.no_grad():
        model(*inputs)
    hook.remove()
    head_input = captured["x"][0]
    step = (head_input.amax(-1) - head_input.amin(-1)) / 255
    bound = step[:, None] * model.lm_head.weight.abs().sum(dim=1)[None, :]
    assert bool(((theirs[0] - ours[0]).abs() <= bound).all())


def test_decoder_weight_only_with_int8_embedding_matches_our_module():
    """No activation is quantized, so only float summation order differs."""
    _, inputs, converted, manager = _decoder("int8 weight-only")
    torch.testing.assert_close(
        _run(manager.buffer, inputs), converted(*inputs), atol=1e-4, rtol=1e-4
    )
