"""X86 config recipes beyond one global config, against torchao as the oracle.

Each recipe is written once against the module torchao users import as ``xiq``
(``torchao...x86_inductor_quantizer``, or ``quantizers.x86_inductor.quantizer`` after the import swap)
and must give the same q/dq and compute op sequence and bit-identical outputs:

* the float16-weight linear config, ``get_x86_inductor_linear_dynamic_fp16_config`` (issue
  19 item 6): alone, fused with a relu, and next to the int8 config on the rest of a model;
* configs of different modes set on different scopes (issue 19 item 7): static with dynamic,
  QAT with post-training, float16 with QAT. torchao keeps the config set first and warns;
  ours does the same with one :class:`MixedConfigWarning` naming both configs and setters.

How Inductor lowers the float16 config is checked in ``test_x86_inductor_lowering``.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

from pt2e_quant import AnnotationError
from tests._migration_harness import Api, ours, peer
from tests.graph_check import qdq_and_compute_ops
from tests.models.x86_patterns import (
    ConvThenLinears,
    ConvUnary,
    LinearFlattenLinear,
    LinearUnary,
)

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")

CONVERT_FP16 = "quantized_decomposed.convert_element_type.no_fuse"


Recipe = Callable[[object], object]  # xiq module -> configured X86InductorQuantizer


def _run(
    api: Api, model: nn.Module, recipe: Recipe, qat: bool
) -> tuple[torch.fx.GraphModule, list]:
    """Export, prepare with ``recipe``'s quantizer, calibrate on two seeded batches, convert;
    QAT also moves the converted model to eval. Returns the model and the setters' warnings."""
    torch.manual_seed(0)
    batches = [model.example_inputs(), model.example_inputs()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantizer = recipe(api.xiq)
    setter_warnings = [w for w in caught if issubclass(w.category, UserWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(copy.deepcopy(model), batches[0]).module()
        prepare = api.prepare_qat_pt2e if qat else api.prepare_pt2e
        prepared = prepare(exported, quantizer)
        torch.manual_seed(0)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        converted = api.convert_pt2e(prepared)
        if qat:
            api.pt2e.move_exported_model_to_eval(converted)
    return converted, setter_warnings


def _assert_same(model: nn.Module, recipe: Recipe, qat: bool = False) -> tuple[list, list]:
    """Same op sequence and bit-identical outputs; returns (our ops, our setter warnings)."""
    torch.manual_seed(0)
    model = model.train() if qat else model.eval()
    theirs, _ = _run(peer(), model, recipe, qat)
    mine, caught = _run(ours(), model, recipe, qat)
    my_ops = qdq_and_compute_ops(mine)
    assert my_ops == qdq_and_compute_ops(theirs)
    torch.manual_seed(1)
    inputs = model.example_inputs()
    with torch.no_grad():
        assert torch.equal(mine(*inputs), theirs(*inputs))
    return my_ops, caught


# --------------------------------------------------------------- item 6: float16 linear weights


def _fp16_linears(xiq) -> object:
    """The recipe of torch's own test of this config: int8 globally, float16 linears."""
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    return quantizer.set_module_type_qconfig(
        nn.Linear, xiq.get_x86_inductor_linear_dynamic_fp16_config()
    )


def _fp16_global(xiq) -> object:
    return xiq.X86InductorQuantizer().set_global(xiq.get_x86_inductor_linear_dynamic_fp16_config())


@pytest.mark.parametrize("recipe", [_fp16_global, _fp16_linears], ids=["global", "module_type"])
@pytest.mark.parametrize("act", [nn.Identity(), nn.ReLU()], ids=["linear", "linear_relu"])
def test_fp16_linear_matches_torchao(act: nn.Module, recipe: Recipe) -> None:
    ops, _ = _assert_same(LinearUnary(act), recipe)
    # the weight is cast to fp16 and back, the activation stays float: no q/dq at all
    assert ops[:3] == [CONVERT_FP16, CONVERT_FP16, "aten.linear.default"]
    assert [op for op in ops if op.startswith("quantized_decomposed.")] == [CONVERT_FP16] * 2


def test_fp16_linears_next_to_int8_conv_match_torchao() -> None:
    ops, caught = _assert_same(ConvThenLinears(), _fp16_linears)
    assert ops.count(CONVERT_FP16) == 4  # two linears, two casts each
    assert ops.count("quantized_decomposed.dequantize_per_channel.default") == 1  # the conv
    # the int8 flatten feeding fc keeps its q/dq, as torchao's recipe does
    flatten = ops.index("aten.flatten.using_ints")
    assert ops[flatten + 1 : flatten + 4] == [
        "quantized_decomposed.quantize_per_tensor.default",
        "quantized_decomposed.dequantize_per_tensor.default",
        "aten.linear.default",
    ]
    assert caught == []  # float16 has no activation mode: it mixes with the static config


def test_fp16_linears_next_to_dynamic_int8_match_torchao() -> None:
    def recipe(xiq):
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(is_dynamic=True))
        return quantizer.set_module_name_qconfig(
            "head", xiq.get_x86_inductor_linear_dynamic_fp16_config()
        )

    ops, caught = _assert_same(ConvThenLinears(), recipe)
    assert ops.count(CONVERT_FP16) == 2 and caught == []
    assert "quantized_decomposed.choose_qparams.tensor" in ops


# -------------------------------------------------------- item 7: mixed modes, first one wins


def _static(xiq, **kwargs):
    return xiq.get_default_x86_inductor_quantization_config(**kwargs)


MIXED_RECIPES: dict[str, tuple[Recipe, bool, tuple[str, str]]] = {
    # name: (recipe, is QAT, (the ignored setter, the setter whose config wins))
    "static_global_then_dynamic_module_name": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_global(_static(xiq))
            .set_module_name_qconfig("fc", _static(xiq, is_dynamic=True))
        ),
        False,
        ("set_module_name_qconfig('fc')", "set_global"),
    ),
    "dynamic_module_name_then_static_global": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_module_name_qconfig("fc", _static(xiq, is_dynamic=True))
            .set_global(_static(xiq))
        ),
        False,
        ("set_global", "set_module_name_qconfig('fc')"),
    ),
    "dynamic_global_then_static_module_type": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_global(_static(xiq, is_dynamic=True))
            .set_module_type_qconfig(nn.Linear, _static(xiq))
        ),
        False,
        ("set_module_type_qconfig(Linear)", "set_global"),
    ),
    "ptq_global_then_qat_module_type": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_global(_static(xiq))
            .set_module_type_qconfig(nn.Linear, _static(xiq, is_qat=True))
        ),
        False,
        ("set_module_type_qconfig(Linear)", "set_global"),
    ),
    "qat_global_then_ptq_module_name": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_global(_static(xiq, is_qat=True))
            .set_module_name_qconfig("head", _static(xiq))
        ),
        True,
        ("set_module_name_qconfig('head')", "set_global"),
    ),
    "qat_global_then_fp16_module_type": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_global(_static(xiq, is_qat=True))
            .set_module_type_qconfig(nn.Linear, xiq.get_x86_inductor_linear_dynamic_fp16_config())
        ),
        True,
        ("set_module_type_qconfig(Linear)", "set_global"),
    ),
    "qat_function_type_then_ptq_global": (
        lambda xiq: (
            xiq.X86InductorQuantizer()
            .set_function_type_qconfig(torch.nn.functional.linear, _static(xiq, is_qat=True))
            .set_global(_static(xiq))
        ),
        True,
        ("set_global", "set_function_type_qconfig(aten.linear)"),
    ),
}


@pytest.mark.parametrize("name", sorted(MIXED_RECIPES))
def test_mixed_modes_keep_the_first_config_as_torchao(name: str, peer_pattern_cache) -> None:
    recipe, qat, (ignored, winner) = MIXED_RECIPES[name]
    ops, caught = _assert_same(ConvThenLinears(), recipe, qat)
    assert any("quantize_per_tensor" in op for op in ops), "nothing quantized: vacuous"
    assert [w.category.__name__ for w in caught] == ["MixedConfigWarning"]
    message = str(caught[0].message)
    assert message.startswith(f"X86InductorQuantizer.{ignored} ignored a ")
    assert f"{winner} already set a " in message
    assert "The config set first wins" in message


def test_every_name_torchaos_x86_module_exports_is_ours_too() -> None:
    """``import ...x86_inductor_quantizer as xiq`` becomes ``import quantizers.x86_inductor.quantizer as
    xiq``: every name torchao's module exports must be there; the presets take the same
    parameters with the same defaults."""
    theirs, mine = peer().xiq, ours().xiq
    assert set(theirs.__all__) <= set(mine.__all__)
    for name in (n for n in theirs.__all__ if n.startswith("get_")):
        expected = [
            (p.name, p.default)
            for p in inspect.signature(getattr(theirs, name)).parameters.values()
        ]
        found = [
            (p.name, p.default) for p in inspect.signature(getattr(mine, name)).parameters.values()
        ]
        assert found == expected, name


def test_fp16_config_on_a_conv_is_cast_by_torchao_and_refused_by_ours() -> None:
    """Deliberate difference (README): with the float16 config set globally torchao casts a
    conv's weight to float16 and back too, which Inductor runs as two casts per call (it has
    an fp16-weight kernel for linear only); ours refuses it in validate, naming the scoping
    that quantizes only the linears."""
    model = ConvUnary(nn.ReLU()).eval()
    theirs, _ = _run(peer(), model, _fp16_global, qat=False)
    conv = next(n for n in theirs.graph.nodes if n.target == torch.ops.aten.conv2d.default)
    assert str(conv.args[1].target) == CONVERT_FP16
    with pytest.raises(AnnotationError, match=r"'conv2d'.*set_module_type_qconfig\(nn\.Linear"):
        _run(ours(), model, _fp16_global, qat=False)


def test_fp16_global_config_before_a_flatten_crashes_torchao_only() -> None:
    """Peer bug (README): torchao propagates the float16 config's absent activation spec into
    the flatten after a linear and its prepare crashes building an observer from it
    (``'NoneType' object has no attribute 'to'``). Ours leaves the flatten alone and casts
    both linears' weights, as the int8-global recipe does (test_fp16_linear_matches_torchao)."""
    model = LinearFlattenLinear().eval()
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'to'"):
        _run(peer(), model, _fp16_global, qat=False)
    mine, _ = _run(ours(), model, _fp16_global, qat=False)
    assert qdq_and_compute_ops(mine) == [CONVERT_FP16] * 4 + [
        "aten.linear.default",
        "aten.flatten.using_ints",
        "aten.linear.default",
    ]


def test_fp16_linears_around_an_int8_flatten_match_torchao() -> None:
    """With int8 globally the flatten between two float16 linears stays int8 (its user is a
    quantizable op), in both."""
    ops, _ = _assert_same(LinearFlattenLinear(), _fp16_linears)
    assert ops.count("quantized_decomposed.quantize_per_tensor.default") == 2
