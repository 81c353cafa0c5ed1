"""Edge case: misuse of the pipeline (wrong order, wrong input type, failures, copies, pickling).

Users call convert before prepare, prepare twice, prepare a converted model, pass an
ExportedProgram or an eager module, deep-copy a prepared model, or try to pickle the result.
Each of these must have one defined outcome: a no-op (with a warning where the user likely
erred), a ValueError / ModelNotExportedError that names the fix, or independent state, and a
failure part-way through prepare must leave the user's module exactly as it was.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import Tensor, nn
from torch.fx import GraphModule

from pt2e_quant import ModelNotExportedError, convert_pt2e, prepare_pt2e
from quantizers.xnnpack.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from tests.core.pipeline._edge_case_pipeline import (
    assert_untouched,
    quiet,
    run_pipeline,
    snapshot,
    xnnpack_quantizer,
)
from tests.models.edge_cases import SameModuleTwice


def _exported_two_linears() -> tuple[GraphModule, Tensor]:
    x = torch.randn(2, 4)
    return torch.export.export(SameModuleTwice().eval(), (x,)).module(), x


def _converted_two_linears() -> tuple[GraphModule, Tensor]:
    gm, x = _exported_two_linears()
    with quiet():
        return run_pipeline(gm, xnnpack_quantizer(), [(x,)]), x


def test_convert_of_an_unprepared_model_returns_it_unquantized() -> None:
    gm, x = _exported_two_linears()
    with quiet():
        converted = convert_pt2e(gm)
    assert not any(str(n.target).startswith("quantized_decomposed") for n in converted.graph.nodes)
    assert torch.equal(converted(x), gm(x))


def test_convert_of_an_unprepared_model_warns() -> None:
    gm, _ = _exported_two_linears()
    with pytest.warns(UserWarning, match="prepare_pt2e"):
        convert_pt2e(gm)


def test_prepare_twice_says_already_prepared() -> None:
    gm, _ = _exported_two_linears()
    prepared = prepare_pt2e(gm, xnnpack_quantizer())
    with pytest.raises(ValueError, match="already prepared"):
        prepare_pt2e(prepared, xnnpack_quantizer())


def test_prepare_twice_fails_and_leaves_the_prepared_model_alone() -> None:
    gm, x = _exported_two_linears()
    prepared = prepare_pt2e(gm, xnnpack_quantizer())
    before = snapshot(prepared)
    with pytest.raises(ValueError):
        prepare_pt2e(prepared, xnnpack_quantizer())
    assert_untouched(prepared, before)
    prepared(x)  # still calibratable


def test_prepare_of_a_converted_model_leaves_it_as_it_is() -> None:
    """Its ops are all quantized already: prepare claims them, and convert gives back the
    same model (torchao would quantize every value a second time)."""
    converted, x = _converted_two_linears()
    with quiet():
        again = run_pipeline(converted, xnnpack_quantizer(), [(x,)])
    assert [n.format_node() for n in again.graph.nodes] == [
        n.format_node() for n in converted.graph.nodes
    ]
    assert torch.equal(again(x), converted(x))


def test_convert_twice_is_a_no_op() -> None:
    converted, x = _converted_two_linears()
    again = convert_pt2e(converted)
    assert again is not converted
    assert [n.format_node() for n in again.graph.nodes] == [
        n.format_node() for n in converted.graph.nodes
    ]
    assert torch.equal(again(x), converted(x))


@pytest.mark.parametrize("api", [prepare_pt2e, convert_pt2e], ids=lambda f: f.__name__)
def test_eager_module_and_exported_program_name_the_call_to_write(api) -> None:
    model = SameModuleTwice().eval()
    program = torch.export.export(model, (torch.randn(2, 4),))
    args = (xnnpack_quantizer(),) if api is prepare_pt2e else ()
    name = api.__name__
    with pytest.raises(ModelNotExportedError, match=rf"{name}\(exported_program\.module\(\)"):
        api(program, *args)
    with pytest.raises(ModelNotExportedError, match=rf"{name}\(torch\.export\.export\(model"):
        api(model, *args)


class FailingXNNPACKQuantizer(XNNPACKQuantizer):
    """Annotates (after its transform lifted the scalar operand into a constant), then fails."""

    def annotate(self, model: GraphModule) -> GraphModule:
        super().annotate(model)
        raise RuntimeError("annotator bug")


class ScalarMul(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x) * 0.5


def test_failed_annotate_after_transform_leaves_the_model_alone() -> None:
    """XNNPACK's transform_for_annotation adds constant attributes; a later failure must not
    leave them (or annotations) on the user's module."""
    x = torch.randn(2, 4)
    gm = torch.export.export(ScalarMul().eval(), (x,)).module()
    before = snapshot(gm)
    quantizer = FailingXNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    with pytest.raises(RuntimeError, match="annotator bug"):
        prepare_pt2e(gm, quantizer)
    assert_untouched(gm, before)
    assert all("quantization_annotation" not in n.meta for n in gm.graph.nodes)


def test_deepcopy_of_a_prepared_model_calibrates_independently() -> None:
    gm, x = _exported_two_linears()
    prepared = prepare_pt2e(gm, xnnpack_quantizer())
    prepared(x)
    clone = copy.deepcopy(prepared)
    clone(x * 10)
    with quiet():
        original, copied = convert_pt2e(prepared), convert_pt2e(clone)
    assert not torch.equal(original(x), copied(x))
    with quiet():
        reference = run_pipeline(gm, xnnpack_quantizer(), [(x,)])
    assert torch.equal(original(x), reference(x))
    assert torch.equal(copy.deepcopy(original)(x), original(x))


def test_torch_exported_modules_cannot_be_pickled() -> None:
    """Whole-module pickling is not a save path: torch.export's own module() cannot be
    pickled, and neither can what prepare/convert derive from it. The supported paths are
    state_dict (test_checkpoint) and torch.export.save of the re-exported program
    (test_edge_dynamic_shapes)."""
    gm, _ = _exported_two_linears()
    with pytest.raises(AttributeError, match="Can't pickle local object"):
        torch.save(gm, io.BytesIO())
