"""Calling into a quantizer's own code: the collector back on, failures named.

prepare runs four of the quantizer's methods (``transform_for_annotation``, ``annotate``,
``validate``, ``prepare_obs_or_fq_callback``). Their code is the quantizer author's: it runs
with Python's collector as the user has it (:func:`~.gc_pause.gc_resumed`), and an exception
from it is re-raised as a :class:`QuantizerError` naming the quantizer's class and the
phase, because a vendor's ``KeyError: 'val'`` deep in its annotator says neither. Our own
errors (raised by our quantizers, or by the core on their behalf) pass through unchanged.
prepare works on a copy, so the user's model is untouched either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pt2e_quant.contract.foreign import describe_quantizer, is_foreign_class
from pt2e_quant.errors import QuantizationError
from pt2e_quant.pipeline.gc_pause import gc_resumed

__all__ = ["QuantizerError", "call_quantizer", "name_the_quantizer"]


class QuantizerError(QuantizationError, RuntimeError):
    """The quantizer's own code raised while prepare called it."""


#: phases a quantizer may leave out, and what the Quantizer base class does for them
_OPTIONAL_PHASES: dict[str, Callable[..., Any]] = {
    "transform_for_annotation": lambda model: model,
    "validate": lambda model: None,
    "prepare_obs_or_fq_callback": lambda model, mapping: None,
}


def call_quantizer(quantizer: Any, phase: str, api: str, *args: Any) -> Any:
    """``quantizer.<phase>(*args)`` with the collector resumed; failures name who and where.

    A quantizer that does not subclass a Quantizer base may leave out the phases the base
    class implements as no-ops; those behave as the base class's would.
    """
    method: Callable[..., Any] | None = getattr(quantizer, phase, None)
    if method is None:
        if phase in _OPTIONAL_PHASES:
            return _OPTIONAL_PHASES[phase](*args)
        raise TypeError(
            f"{api}: {describe_quantizer(quantizer)} has no {phase}() method, so it is not a "
            "quantizer; pass a pt2e_quant (or torchao) Quantizer subclass, which implements "
            "annotate(model)"
        )
    try:
        with gc_resumed():
            return method(*args)
    except QuantizationError:
        raise
    except Exception as error:
        raise QuantizerError(
            f"{api}: {describe_quantizer(quantizer)} raised {type(error).__name__} in its "
            f"{phase}(): {error}\nThe error comes from the quantizer's own code, not from "
            f"pt2e_quant; the model passed to {api} is unchanged. Check the quantizer's "
            "configuration against this model, or report it to the quantizer's authors "
            "(the original traceback is chained above)."
        ) from error


def name_the_quantizer(error: QuantizationError, quantizer: Any) -> None:
    """Prefix an error about annotations with the quantizer that wrote them (in place).

    Quantizers shipped with pt2e_quant are left out: their errors already speak in their
    terms, and an internal one (the sensitivity sweep's) means nothing to the user.
    """
    if not is_foreign_class(type(quantizer)):
        return
    who = describe_quantizer(quantizer)
    message = str(error.args[0]) if error.args else ""
    if who not in message:
        error.args = (f"Annotations written by {who}: {message}", *error.args[1:])
