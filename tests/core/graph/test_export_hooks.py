"""prepare_pt2e / convert_pt2e drop the per-call hooks ``ExportedProgram.module()`` installs, only those.

torch.compile runs module hooks eagerly around the compiled frame, so export's input-spec
check cost a fixed ~50 µs per call of a compiled int8 model (torchao's convert, which rebuilds
a plain GraphModule, has none). Users' own hooks must survive, and bad inputs must still fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pt2e_quant.observer as our_observer
from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.graph.export_hooks import drop_export_hooks
from tests.core.contract.quantizer_fixtures import ConvLinearQuantizer, int8_specs
from tests.models import TwoLinearModule

EXPORT_HOOK_MODULE = "torch.export._unlift"


def _export_hooks(model: nn.Module) -> list[object]:
    hooks = [*model._forward_pre_hooks.values(), *model._forward_hooks.values()]
    return [hook for hook in hooks if getattr(hook, "__module__", None) == EXPORT_HOOK_MODULE]


def _exported():
    torch.manual_seed(0)
    model = TwoLinearModule().eval()
    example = model.example_inputs()
    exported = torch.export.export(model, example).module()
    assert _export_hooks(exported), "torch.export no longer installs hooks: revisit export_hooks"
    return exported, example


def _prepared():
    exported, example = _exported()
    prepared = prepare_pt2e(exported, ConvLinearQuantizer(*int8_specs(our_observer)))
    prepared(*example)
    return prepared, example


def test_converted_model_has_no_export_hooks_and_same_outputs():
    prepared, example = _prepared()
    with_hooks = prepared(*example)
    converted = convert_pt2e(prepared)
    assert not converted._forward_pre_hooks and not converted._forward_hooks
    reference = convert_pt2e(prepared)
    exported = _exported()[0]
    for handle_id, hook in exported._forward_pre_hooks.items():  # they only check inputs
        with_kwargs = handle_id in exported._forward_pre_hooks_with_kwargs
        reference.register_forward_pre_hook(hook, with_kwargs=with_kwargs)
    assert reference._forward_pre_hooks
    torch.testing.assert_close(converted(*example), reference(*example), rtol=0, atol=0)
    assert with_hooks.shape == converted(*example).shape


def test_prepare_drops_the_hooks_of_its_copy_only():
    exported, example = _exported()
    prepared = prepare_pt2e(exported, ConvLinearQuantizer(*int8_specs(our_observer)))
    assert not _export_hooks(prepared)
    assert _export_hooks(exported), "the caller's module must keep its hooks"
    (x,) = example
    with pytest.raises(Exception, match="size|shape|Guard"):
        prepared(torch.randn(x.shape[0], x.shape[1] + 1))  # wrong shape: _guards_fn
    prepared.register_forward_pre_hook(_export_like_hook)  # convert must not touch prepared
    convert_pt2e(prepared)
    assert _export_hooks(prepared)


def test_user_hooks_survive_convert():
    prepared, example = _prepared()
    calls = []
    prepared.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    prepared.register_forward_hook(lambda module, args, out: calls.append("post"))
    converted = convert_pt2e(prepared)
    converted(*example)
    assert calls == ["pre", "post"]


def test_bad_inputs_still_fail_without_the_hooks():
    prepared, example = _prepared()
    converted = convert_pt2e(prepared)
    with pytest.raises(TypeError):
        converted(*example, example[0])  # wrong arity: forward's own signature
    (x,) = example
    with pytest.raises(Exception, match="size|shape|Guard"):
        converted(torch.randn(x.shape[0], x.shape[1] + 1))  # wrong shape: _guards_fn


def test_module_inputs_keep_the_hooks_they_need():
    """Models taking nn.Module inputs need export's pytree registration hooks."""

    class Spec:  # stand-in for a TreeSpec whose type is an nn.Module subclass
        type = nn.Linear

        def children(self) -> list:
            return []

    model = convert_pt2e(_prepared()[0])
    model.register_forward_pre_hook(_export_like_hook)
    model._in_spec = Spec()
    assert drop_export_hooks(model) is False
    assert model._forward_pre_hooks


def _export_like_hook(module, args):
    return None


_export_like_hook.__module__ = EXPORT_HOOK_MODULE
