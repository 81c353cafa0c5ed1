"""X86 Inductor lowering: our X86InductorQuantizer's graphs fuse in Inductor like torchao's.

Every zoo model (each has a conv or a linear) is quantized with the default static config and
compiled with ``torch.compile`` under ``freezing=True``, the mode in which Inductor's
quantization passes prepack int8 weights and fuse q/dq into ``onednn`` qconv / qlinear ops.
Those passes count what they match in ``torch._dynamo.utils.counters["inductor"]``; the
counters whose names start with ``q`` or contain ``quant`` (``qconv_weight_prepack_matcher_*``,
``qconv_unary_*``, ``qconv2d_binary_*``, ``qlinear_*``, ``qreshape_*``, ``dequant_promotion_*``,
``quant_lift_up_*``, ...) must equal those of the same model quantized by torchao's
X86InductorQuantizer through torchao's prepare/convert, and the prepack counters must be > 0.
Beyond the counters, Inductor's generated code (wrapper and kernels, minus compile ids, cache
paths and addresses) must be the same text as for torchao's graph of the same export IR:
identical code is what makes "int8 latency ours <= peer" hold by construction.

Fairness: both models compile in the same process state. Importing torchao's x86 quantizer
registers torchao's copies of the fusion patterns in Inductor's freezing pass (kept, for both)
and replaces ``torch._inductor.config.pre_grad_custom_pass`` with its own ``quant_lift_up``,
which lifts quantize nodes itself and so hides Inductor's ``quant_lift_up_count``. The module
fixture imports torchao first and every compile runs under
``config.patch(freezing=True, pre_grad_custom_pass=None)``, so no global state leaks and both
sides see the same passes. (Measured by hand: without the torchao import our counters are the
same on resnet_basic_block and transformer_encoder_block.)

Compiling is slow on a 2-core machine (1-15 s per model, the first one ~30 s with a cold
Inductor cache), which is why each model is quantized and compiled once per side (twice for
ours on the four models torchao can only take strictly exported).
"""

from __future__ import annotations

import copy
import importlib
import re
import warnings
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn
from torch._inductor.utils import run_and_get_code
from torch.fx import GraphModule, Node

import quantizers.x86_inductor.quantizer
from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.ops.qdq_ops import is_dequantize
from quantizers import X86InductorQuantizer, get_default_x86_inductor_quantization_config
from tests.models import ZOO
from tests.models.x86_patterns import (
    ConvThenLinears,
    LinearUnary,
)

pytestmark = [pytest.mark.inductor, pytest.mark.torchao]

#: torchao's quantizer raises "Input partition has more than one output node" on the
#: non-strict export of these (see test_x86_inductor_torchao_parity.test_torchao_crashes_on_non_strict_resnets),
#: so torchao quantizes their strict export; same aten ops, ours keeps the non-strict one.
PEER_CRASHES_NON_STRICT = (
    "resnet_basic_block",
    "resnet_basic_block_downsample",
    "resnet_bottleneck",
    "tiny_resnet",
)

PREPACK_COUNTERS = ("qconv_weight_prepack_matcher_count", "qlinear_weight_prepack_matcher_count")

#: Compiled vs eager converted model, in output quantization steps: Inductor computes the same
#: int8 products in oneDNN, so they differ only by float accumulation order and rounding.
MAX_STEPS = 2.0

Pipeline = tuple[Callable, Callable, object]


@pytest.fixture(scope="module")
def torchao_x86():
    """torchao's x86 quantizer module and prepare/convert, imported before any compile so its
    pattern registrations are in place for our compiles too (module docstring)."""
    pytest.importorskip("torchao")
    import torch._inductor.config as inductor_config

    before = inductor_config.pre_grad_custom_pass
    module = importlib.import_module("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")
    inductor_config.pre_grad_custom_pass = before
    pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
    return module, pipeline


def _quantize(model: nn.Module, example: tuple, pipeline: Pipeline, strict: bool) -> GraphModule:
    prepare, convert, quantizer = pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(copy.deepcopy(model), example, strict=strict).module()
        prepared = prepare(exported, quantizer)
        with torch.no_grad():
            prepared(*example)
        return convert(prepared)


def ours() -> Pipeline:
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    return prepare_pt2e, convert_pt2e, quantizer


def theirs(torchao_x86) -> Pipeline:
    module, pipeline = torchao_x86
    config = module.get_default_x86_inductor_quantization_config()
    quantizer = module.X86InductorQuantizer().set_global(config)
    return pipeline.prepare_pt2e, pipeline.convert_pt2e, quantizer


class Compiled(NamedTuple):
    counters: dict[str, int]  # the quantization fusion counters
    outputs: list[Tensor]
    code: str  # Inductor's generated wrapper and kernels, see comparable_code


def compile_frozen(converted: GraphModule, inputs: tuple) -> Compiled:
    """Compile with freezing, run once on copies of ``inputs``; return what Inductor made.

    Copies, because Inductor's qlinear + add fusion can write its sum into a graph input
    (see ``test_compiled_linear_add_leaves_its_input_alone``).
    """
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch._inductor.config.patch(freezing=True, pre_grad_custom_pass=None):
        with torch.no_grad():
            outputs, codes = run_and_get_code(
                torch.compile(converted), *[t.clone() for t in inputs]
            )
    counters = torch._dynamo.utils.counters["inductor"]
    fusion = {k: v for k, v in counters.items() if k.startswith("q") or "quant" in k}
    torch._dynamo.reset()
    return Compiled(
        dict(sorted(fusion.items())),
        torch.utils._pytree.tree_leaves(outputs),
        comparable_code("\n".join(codes)),
    )


#: What differs between two compiles of the same graph in one process: the compile's id,
#: the addresses of the frozen constants and the cache file paths.
_RUN_SPECIFIC = (
    (re.compile(r"^# AOT ID: .*$", re.MULTILINE), "# AOT ID"),
    (re.compile(r"(# device\(type='cpu'\).*) [0-9a-f]{6,}$", re.MULTILINE), r"\1"),
    (re.compile(r"/tmp/torchinductor_[^/\s]+/\w+/\w+\.py"), "<cache file>"),
    (re.compile(r" at 0x[0-9a-f]+"), " at <address>"),
)


def comparable_code(code: str) -> str:
    """Inductor's output code without what changes from one compile to the next."""
    for pattern, replacement in _RUN_SPECIFIC:
        code = pattern.sub(replacement, code)
    return code


def _nearest_dequantize(node: Node) -> Node:
    """Breadth-first up the inputs of ``node`` to the closest dequantize."""
    frontier, seen = [node], set()
    while frontier:
        current = frontier.pop(0)
        if is_dequantize(current):
            return current
        seen.add(current)
        frontier += [a for a in current.all_input_nodes if a not in seen]
    raise AssertionError(f"no dequantize upstream of {node}")


def output_steps(converted: GraphModule) -> list[float]:
    """For each output, the scale of the closest dequantize upstream of it. x86 leaves the
    outputs of fused patterns float, so this is the step of the last quantized activation."""
    (output,) = [n for n in converted.graph.nodes if n.op == "output"]
    leaves = torch.utils._pytree.tree_leaves(output.args[0])
    return [float(_nearest_dequantize(leaf).args[1]) for leaf in leaves]


@pytest.mark.parametrize("name", sorted(ZOO))
def test_same_fusion_counters_and_code_as_torchao(torchao_x86, name: str) -> None:
    """Same fusion counters as torchao's graph, and on the same export IR the very same
    generated code, so the int8 latency cannot differ either (the benchmark's Inductor table
    only measures the noise around that)."""
    torch.manual_seed(0)
    model = ZOO[name]().eval()
    example = model.example_inputs()
    peer_on_strict = name in PEER_CRASHES_NON_STRICT
    mine = _quantize(model, example, ours(), strict=False)
    peer = _quantize(model, example, theirs(torchao_x86), peer_on_strict)

    my_build, peer_build = compile_frozen(mine, example), compile_frozen(peer, example)
    assert my_build.counters == peer_build.counters
    assert any(my_build.counters.get(key, 0) > 0 for key in PREPACK_COUNTERS), my_build.counters

    # Strict and non-strict exports order their parameters differently, which renames the
    # frozen constants in the code: compare those models on the peer's IR.
    same_ir_code = (
        compile_frozen(_quantize(model, example, ours(), strict=True), example).code
        if peer_on_strict
        else my_build.code
    )
    assert same_ir_code == peer_build.code, _first_difference(same_ir_code, peer_build.code)

    with torch.no_grad():
        eager = torch.utils._pytree.tree_leaves(mine(*example))
    for compiled, reference, step in zip(my_build.outputs, eager, output_steps(mine), strict=True):
        error = (compiled - reference).abs().max().item()
        assert error <= MAX_STEPS * step, f"compiled differs by {error:.3g}, step {step:.3g}"


def _first_difference(ours_code: str, peer_code: str) -> str:
    for index, (mine, theirs) in enumerate(
        zip(ours_code.splitlines(), peer_code.splitlines(), strict=False)
    ):
        if mine != theirs:
            return f"line {index + 1} differs:\n ours: {mine}\n peer: {theirs}"
    return "one code is a prefix of the other"


class LinearAddResidual(nn.Module):
    """x (2,8,16) ─┬─ relu ─ Linear(16→16) ─┐
    └──────────────────────── add ─ out"""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc(torch.relu(x))


@pytest.mark.xfail(
    strict=True,
    reason="Inductor (torch 2.13) bug, torchao's graph too: with freezing, the qlinear + add "
    "fusion accumulates its 'sum' post-op in place into the add's other operand even when "
    "that is a graph input, so the caller's tensor is overwritten. The output is right. "
    "When this starts passing, drop the xfail and the input copies in compile_frozen.",
)
def test_compiled_linear_add_leaves_its_input_alone() -> None:
    torch.manual_seed(0)
    model = LinearAddResidual().eval()
    example = (torch.randn(2, 8, 16),)
    converted = _quantize(model, example, ours(), strict=False)
    x = example[0].clone()
    torch._dynamo.reset()
    with torch._inductor.config.patch(freezing=True, pre_grad_custom_pass=None):
        with torch.no_grad():
            torch.compile(converted)(x)
    torch._dynamo.reset()
    assert torch.equal(x, example[0])


# ------------------------------------------------------------------- float16-weight linears


def _fp16_linears(module) -> X86InductorQuantizer:
    """torch's own test recipe for the fp16 kernel: int8 globally, float16 linear weights."""
    quantizer = module.X86InductorQuantizer()
    quantizer.set_global(module.get_default_x86_inductor_quantization_config())
    return quantizer.set_module_type_qconfig(
        nn.Linear, module.get_x86_inductor_linear_dynamic_fp16_config()
    )


#: name -> (model, example input, the fp16 kernel Inductor must call, conv prepacks)
FP16_CASES = {
    "linear_2d": (lambda: LinearUnary(nn.Identity()), (4, 8), "linear_dynamic_fp16", 0),
    "linear_relu_3d": (lambda: LinearUnary(nn.ReLU()), (4, 2, 8), "linear_relu_dynamic_fp16", 0),
    "int8_conv_then_linears": (ConvThenLinears, (1, 3, 6, 6), "linear_relu_dynamic_fp16", 1),
}


@pytest.mark.parametrize("name", sorted(FP16_CASES))
def test_fp16_linear_lowers_like_torchao(torchao_x86, name: str) -> None:
    """With ``freezing=True`` Inductor replaces ``w -> to_fp16 -> to_fp32 -> linear [-> relu]``
    by ``onednn.linear_(relu_)dynamic_fp16`` on a prepacked weight: ours must hit that
    rewrite as torchao's graph does (same counters, same generated code), and the compiled
    model must compute what the eager converted one does."""
    build, shape, kernel, conv_prepacks = FP16_CASES[name]
    torch.manual_seed(0)
    model, example = build().eval(), (torch.randn(shape),)
    module, pipeline = torchao_x86
    peer_pipeline = (pipeline.prepare_pt2e, pipeline.convert_pt2e, _fp16_linears(module))
    our_pipeline = (prepare_pt2e, convert_pt2e, _fp16_linears(quantizers.x86_inductor.quantizer))
    mine = _quantize(model, example, our_pipeline, strict=False)
    peer = _quantize(model, example, peer_pipeline, strict=False)

    my_build, peer_build = compile_frozen(mine, example), compile_frozen(peer, example)
    assert my_build.counters == peer_build.counters
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    prepacks = my_build.counters.get("qlinear_weight_prepack_matcher_count", 0)
    assert prepacks == linears  # every fp16 linear became the oneDNN kernel
    assert my_build.counters.get("qconv_weight_prepack_matcher_count", 0) == conv_prepacks
    assert f"torch.ops.onednn.{kernel}" in my_build.code
    assert my_build.code == peer_build.code, _first_difference(my_build.code, peer_build.code)

    with torch.no_grad():
        eager = mine(*example)
    torch.testing.assert_close(my_build.outputs[0], eager, rtol=1e-4, atol=1e-4)
