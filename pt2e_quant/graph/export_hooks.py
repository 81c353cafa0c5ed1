"""Drop the per-call hooks ``torch.export`` installs on ``.module()``, from our pipeline's models.

``ExportedProgram.module()`` registers two forward pre-hooks (an input-structure / range check,
and, for models that take ``nn.Module`` inputs, registering those types as pytree nodes) and
one forward hook (undoing that registration). ``torch.compile(model)`` runs a module's hooks
eagerly, outside the compiled frame, on every call, and any hook also moves ``nn.Module``'s
call onto its slow path: on a small int8 model that was a third of the per-call latency.
torchao's convert rebuilds a plain GraphModule, which drops them; we drop only export's, so
hooks users registered stay. Prepare drops them too (torchao's prepared model has none either):
the input check cost ~80 us per calibration batch, as much as 40 observers. Bad inputs are still caught: a wrong arity by ``forward``'s own
signature, wrong shapes and dtypes by the graph's ``_guards_fn``.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule
from torch.utils import _pytree as pytree

__all__ = ["drop_export_hooks"]

# Where export's hooks are defined (the check and the lambdas alike); a hook from anywhere
# else is the user's.
_EXPORT_HOOK_MODULE = "torch.export._unlift"


def _takes_module_inputs(spec: pytree.TreeSpec | None) -> bool:
    """Whether the exported inputs hold ``nn.Module`` objects, which need export's hooks."""
    if spec is None:
        return False
    if isinstance(spec.type, type) and issubclass(spec.type, torch.nn.Module):
        return True
    # torch 2.13 deprecates ``children_specs`` in favour of ``children()``
    children = spec.children() if hasattr(spec, "children") else spec.children_specs
    return any(_takes_module_inputs(child) for child in children)


def drop_export_hooks(model: GraphModule) -> bool:
    """Remove export's forward (pre-)hooks from ``model``; returns whether any was removed.

    Only touches ``model``'s own hook dictionaries, which the pipeline's working copy owns.
    """
    if _takes_module_inputs(getattr(model, "_in_spec", None)):
        return False
    changed = False
    for hooks in (model._forward_pre_hooks, model._forward_hooks):
        for handle_id, hook in list(hooks.items()):
            if getattr(hook, "__module__", None) != _EXPORT_HOOK_MODULE:
                continue
            del hooks[handle_id]
            model._forward_pre_hooks_with_kwargs.pop(handle_id, None)
            model._forward_hooks_with_kwargs.pop(handle_id, None)
            model._forward_hooks_always_called.pop(handle_id, None)
            changed = True
    return changed
