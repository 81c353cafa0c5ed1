"""``rewrite_for_inductor``: what a converted model needs before ``torch.compile`` on x86.

convert emits the portable q/dq form. Inductor fuses the default scheme's form (``dq ->
linear/conv <- dq``) itself, but not a quantized ``addmm`` nor the LLM schemes of
:mod:`quantizers.x86_inductor.llm_config`, so their models are rewritten into the forms its
kernels take, one pass each, in this order::

    rewrite_addmm_as_linear           addmm(bias, x, dq(w, axis=1)) -> linear (qlinear pattern)
    use_weight_int8pack_mm            float x, int8 weight -> _weight_int8pack_mm
    use_int_mm                        per-token int8 x, int8 weight -> _int_mm (-> qlinear)
    decompose_per_token_quantization  per-token q/dq -> aten ops Inductor fuses

Usage (the model is rewritten in place; nothing else changes its numbers beyond float
rounding)::

    converted = convert_pt2e(prepared)
    rewrite_for_inductor(converted)
    with torch.no_grad(), torch._inductor.config.patch(freezing=True):
        fast = torch.compile(converted)

A model with nothing to rewrite is returned unchanged (``False``). The x86 backend has no
lowering step of its own to run this in (``quantize(backend="x86")`` returns the converted
module, which users compile), so it is a public function.
"""

from __future__ import annotations

from torch.fx import GraphModule

from pt2e_quant.graph.subgraphs import iter_graph_modules
from pt2e_quant.passes.driver import run_pass
from quantizers.x86_inductor.inductor_rewrites.decompose_per_token_quantization import (
    decompose_per_token_quantization,
)
from quantizers.x86_inductor.inductor_rewrites.rewrite_addmm_as_linear import (
    rewrite_addmm_as_linear,
)
from quantizers.x86_inductor.inductor_rewrites.use_int_mm import use_int_mm
from quantizers.x86_inductor.inductor_rewrites.use_weight_int8pack_mm import (
    use_weight_int8pack_mm,
)

__all__ = [
    "decompose_per_token_quantization",
    "rewrite_addmm_as_linear",
    "rewrite_for_inductor",
    "use_int_mm",
    "use_weight_int8pack_mm",
]

_PASSES = (
    rewrite_addmm_as_linear,
    use_weight_int8pack_mm,
    use_int_mm,
    decompose_per_token_quantization,
)


def rewrite_for_inductor(model: GraphModule) -> bool:
    """Run the rewrites above on ``model`` and its sub-graphs; returns whether any changed."""
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"rewrite_for_inductor expects the GraphModule convert_pt2e returned, got "
            f"{type(model).__name__}"
        )
    changed = False
    for gm in iter_graph_modules(model):
        for graph_pass in _PASSES:
            changed |= run_pass(gm, graph_pass)
    return changed
