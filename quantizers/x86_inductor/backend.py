"""The ``"x86"`` backend as the core's registry sees it (entry point
``pt2e_quant.backends: x86``): the recommended preset and the Inductor fusion prediction."""

from __future__ import annotations

from collections.abc import Mapping

from pt2e_quant.contract.backends import Backend
from quantizers.x86_inductor.config import get_default_x86_inductor_quantization_config
from quantizers.x86_inductor.inductor_fusion import freezing_warning, predict_x86
from quantizers.x86_inductor.quantizer import X86InductorQuantizer

__all__ = ["BACKEND", "preset"]


def preset(
    *, per_tensor: bool = False, dynamic: bool = False, qat: bool = False
) -> X86InductorQuantizer:
    """uint8 activations, int8 per-channel weights: Inductor's int8 kernels accept nothing
    else, so ``per_tensor`` is refused rather than silently ignored."""
    if per_tensor:
        raise ValueError(
            "per_tensor: the x86 backend only supports per-channel weights "
            "(Inductor's int8 conv/linear kernels require them); drop per_tensor"
        )
    config = get_default_x86_inductor_quantization_config(is_dynamic=dynamic, is_qat=qat)
    return X86InductorQuantizer().set_global(config)


def _summarize(counts: Mapping[str, int]) -> str:
    kernels = counts.get("int8 qconv", 0) + counts.get("int8 qlinear", 0)
    return (
        f"; Inductor will fuse {kernels} int8 kernels"
        f" (+{counts.get('fused post-op', 0)} fused post-ops)"
    )


def _warnings() -> list[str]:
    warning = freezing_warning()
    return [] if warning is None else [warning]


BACKEND = Backend(
    name="x86",
    preset=preset,
    quantizer_types=(X86InductorQuantizer,),
    title="Inductor",
    description="torch.compile / Inductor int8 kernels on x86 CPUs",
    predict=predict_x86,
    summarize=_summarize,
    order=1,
    warnings=_warnings,
    supports_per_tensor=False,
)
