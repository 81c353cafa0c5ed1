"""Backend names -> ready-configured quantizers, for :func:`pt2e_quant.quantize` and the CLI.

A preset is the configuration each backend recommends, so "quantize for XNNPACK" needs no
knowledge of observers or qschemes:

* ``"xnnpack"``: int8 per-tensor activations, int8 symmetric weights, per channel unless
  ``per_tensor`` (ExecuTorch's recommended static preset).
* ``"x86"``: uint8 activations, int8 per-channel weights (Inductor's int8 kernels accept
  nothing else, so ``per_tensor`` is refused rather than silently ignored).

``dynamic`` quantizes activations at run time (no calibration needed for them) and ``qat``
swaps observers for fake-quantize modules.
"""

from __future__ import annotations

from pt2e_quant.contract.quantizer import Quantizer

__all__ = ["BACKENDS", "preset_quantizer"]

#: the backend names :func:`preset_quantizer` accepts, in the order help texts list them
BACKENDS = ("xnnpack", "x86")


def preset_quantizer(
    backend: str, *, per_tensor: bool = False, dynamic: bool = False, qat: bool = False
) -> Quantizer:
    """A new quantizer for ``backend`` with its recommended global config.

    Raises ``ValueError`` naming the argument for an unknown backend or a combination the
    backend cannot run.
    """
    # Imported here: the backends build on pt2e_quant, so importing them at module level
    # would make `import pt2e_quant` import the backends (and cycle once it re-exports us).
    from quantizers import (
        X86InductorQuantizer,
        XNNPACKQuantizer,
        get_default_x86_inductor_quantization_config,
        get_symmetric_quantization_config,
    )

    if backend == "xnnpack":
        config = get_symmetric_quantization_config(
            is_per_channel=not per_tensor, is_dynamic=dynamic, is_qat=qat
        )
        return XNNPACKQuantizer().set_global(config)
    if backend == "x86":
        if per_tensor:
            raise ValueError(
                "per_tensor: the x86 backend only supports per-channel weights "
                "(Inductor's int8 conv/linear kernels require them); drop per_tensor"
            )
        config = get_default_x86_inductor_quantization_config(is_dynamic=dynamic, is_qat=qat)
        return X86InductorQuantizer().set_global(config)
    raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
