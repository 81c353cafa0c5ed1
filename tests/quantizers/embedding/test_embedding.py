"""EmbeddingQuantizer: which lookups it claims, the q/dq it yields, and what validate rejects."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pt2e_quant import AnnotationError, convert_pt2e, prepare_pt2e
from pt2e_quant.contract.annotation import annotate_input, get_annotation, is_annotated
from pt2e_quant.ops import qdq_ops
from quantizers.embedding.quantizer import (
    EMBEDDING_OPS,
    EmbeddingQuantizer,
    get_embedding_quantization_config,
)
from tests.graph_check import assert_node_occurrence, assert_node_order, ops_in_order
from tests.models import EmbeddingBagModel, EmbeddingModule, export_model

aten = torch.ops.aten


def _quantize(model: nn.Module, quantizer=None, inputs=None):
    inputs = model.example_inputs() if inputs is None else inputs
    prepared = prepare_pt2e(export_model(model, inputs), quantizer or EmbeddingQuantizer())
    prepared(*inputs)
    return convert_pt2e(prepared)


class ComputedTable(nn.Module):
    """An embedding whose table is computed from a model input::

    indices, gain ─ embedding(weight * gain) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 4))

    def forward(self, indices: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.weight * gain)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, 10, (6,)), torch.rand(()) + 0.5)


class DerivedTable(nn.Module):
    """An embedding whose table is a pure function of its parameter (a dtype cast, a row slice
    and a scale), so it is a constant that convert pre-computes::

    indices ─ embedding((weight.float()[:8]) * 2) ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 4))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.weight.float()[:8] * 2)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, 8, (6,)),)


class TwoTables(nn.Module):
    """Two embeddings in named submodules, summed::

    indices ─┬─ users(Embedding) ─┐
             └─ items(Embedding) ─┴─ add ─ out
    """

    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(10, 4)
        self.items = nn.Embedding(10, 4)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.users(indices) + self.items(indices)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.randint(0, 10, (6,)),)


def test_config_matches_torchao_choice() -> None:
    spec = get_embedding_quantization_config().weight
    assert spec.dtype == torch.uint8
    assert spec.qscheme == torch.per_channel_affine_float_qparams
    assert spec.ch_axis == 0
    observer = spec.observer_or_fake_quant_ctr()
    assert observer.eps.item() == 2**-12
    config = get_embedding_quantization_config()
    assert config.input_activation is None and config.output_activation is None


def test_embedding_module_seed_counts_and_order() -> None:
    torch.manual_seed(0)
    converted = _quantize(EmbeddingModule())
    assert_node_occurrence(
        converted,
        {
            qdq_ops.QUANTIZE_PER_CHANNEL: 0,
            qdq_ops.DEQUANTIZE_PER_CHANNEL: 1,
            qdq_ops.QUANTIZE_PER_TENSOR: 0,
            qdq_ops.DEQUANTIZE_PER_TENSOR: 0,
        },
    )
    assert_node_order(converted, [qdq_ops.DEQUANTIZE_PER_CHANNEL, aten.embedding.default])


def test_dequantized_table_has_float_qparams_per_row() -> None:
    torch.manual_seed(0)
    model = EmbeddingModule()
    converted = _quantize(model)
    (dq,) = [n for n in converted.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL]
    scale = getattr(converted, dq.args[1].target)
    zero_point = getattr(converted, dq.args[2].target)
    assert scale.shape == (10,) and zero_point.is_floating_point()
    assert dq.args[3:] == (0, 0, 255, torch.uint8)
    # Per-row error bound. quantized_decomposed.quantize_per_channel (like torchao's convert)
    # adds the float zero point after rounding and truncates to uint8, so the bound is 1.5
    # steps of that row rather than the 0.5 of torch.quantize_per_channel.
    indices = torch.arange(32) % 10  # every row, in the exported (static) shape
    error = (converted(indices) - model(indices)).abs()[:10].amax(dim=1)
    assert torch.all(error <= 1.5 * scale + 1e-6)
    assert error.max() > 0  # it really is quantized


def test_embedding_bag_is_quantized() -> None:
    torch.manual_seed(0)
    model = EmbeddingBagModel()
    exported = export_model(model)
    bags = [n.target for n in exported.graph.nodes if n.target in EMBEDDING_OPS]
    assert bags == [aten.embedding_bag.padding_idx]  # what export produces today
    converted = _quantize(model)
    assert_node_occurrence(converted, {qdq_ops.DEQUANTIZE_PER_CHANNEL: 1})
    assert_node_order(converted, [qdq_ops.DEQUANTIZE_PER_CHANNEL, aten.embedding_bag.padding_idx])
    # the linear after the bag is not this quantizer's business
    assert_node_occurrence(converted, {qdq_ops.DEQUANTIZE_PER_TENSOR: 0})


class Bag(nn.Module):
    """indices, offsets (, per_sample_weights) ─ EmbeddingBag(20, 8, mode) ─ out"""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(20, 8, mode=mode)

    def forward(self, indices, offsets, per_sample_weights=None):
        return self.bag(indices, offsets, per_sample_weights=per_sample_weights)


@pytest.mark.parametrize("mode", ["sum", "max", "mean"])
def test_embedding_bag_stays_within_its_rows_quantization_steps(mode: str) -> None:
    """Each pooled output stays within the rounding error of the rows it pools.

    A table row r quantizes with step s_r = (max_r - min_r) / 255 (float qparams, so no
    zero is forced into the range) and dequantizes within 1.5 s_r (the bound, and why it is
    not 0.5, is in test_dequantized_table_has_float_qparams_per_row). Pooling moves that
    bound through linearly: a bag's error is at most sum_i |w_i| 1.5 s_(r_i) for ``sum``
    with per-sample weights w_i, the mean of 1.5 s_(r_i) for ``mean``, and the largest
    1.5 s_(r_i) for ``max`` (max is 1-Lipschitz in the sup norm). The steps are computed
    from the float table, not read from the graph, so a coarser quantization (fewer levels,
    a larger eps floor, per-column qparams) fails here even where op counts stay the same.
    There is no torchao peer to compare bits with: torchao's EmbeddingQuantizer annotates
    ``aten.embedding`` only and leaves a bag float.
    """
    torch.manual_seed(0)
    model = Bag(mode).eval()
    indices, offsets = torch.randint(0, 20, (12,)), torch.tensor([0, 3, 7, 8])
    weights = torch.rand(12) * 2 - 1 if mode == "sum" else None
    inputs = (indices, offsets, weights) if weights is not None else (indices, offsets)
    converted = _quantize(model, inputs=inputs)
    (dq,) = [n for n in converted.graph.nodes if n.target == qdq_ops.DEQUANTIZE_PER_CHANNEL]
    table = model.bag.weight.detach()
    step = (table.amax(dim=1) - table.amin(dim=1)) / 255
    torch.testing.assert_close(getattr(converted, dq.args[1].target), step)
    row_bound = 1.5 * step[indices]  # per looked-up index
    bags = torch.tensor_split(torch.arange(12), offsets[1:])
    if mode == "sum":
        bound = torch.stack([(weights[b].abs() * row_bound[b]).sum() for b in bags])
    elif mode == "mean":
        bound = torch.stack([row_bound[b].mean() for b in bags])
    else:
        bound = torch.stack([row_bound[b].amax() for b in bags])
    with torch.no_grad():
        error = (converted(*inputs) - model(*inputs)).abs().amax(dim=1)
    assert torch.all(error <= bound + 1e-6), (error, bound)
    assert error.max() > 0  # it really is quantized


def test_decomposed_embedding_bag_is_claimed() -> None:
    model = EmbeddingBagModel().eval()
    program = torch.export.export(model, model.example_inputs()).run_decompositions()
    gm = program.module()
    EmbeddingQuantizer().annotate(gm)
    bags = [n for n in gm.graph.nodes if n.target == aten._embedding_bag.default]
    assert len(bags) == 1 and is_annotated(bags[0])
    assert list(get_annotation(bags[0]).input_qspec_map) == [bags[0].args[0]]


def test_annotation_only_quantizes_the_table() -> None:
    gm = export_model(EmbeddingModule())
    EmbeddingQuantizer().annotate(gm)
    (node,) = [n for n in gm.graph.nodes if n.target == aten.embedding.default]
    annotation = get_annotation(node)
    assert list(annotation.input_qspec_map) == [node.args[0]]
    assert annotation.output_qspec is None and annotation._annotated


def test_already_claimed_embedding_is_skipped() -> None:
    gm = export_model(EmbeddingModule())
    (node,) = [n for n in gm.graph.nodes if n.target == aten.embedding.default]
    earlier = get_annotation(node)
    EmbeddingQuantizer().annotate(gm)
    first = get_annotation(node)
    assert earlier is None and first is not None
    EmbeddingQuantizer().annotate(gm)
    assert get_annotation(node) is first


def test_module_name_none_leaves_one_table_float() -> None:
    torch.manual_seed(0)
    quantizer = EmbeddingQuantizer().set_module_name("users", None)
    converted = _quantize(TwoTables(), quantizer)
    assert_node_occurrence(converted, {qdq_ops.DEQUANTIZE_PER_CHANNEL: 1})
    embeddings = [n for n in converted.graph.nodes if n.target == aten.embedding.default]
    tables = [n.args[0] for n in embeddings]
    assert sorted(t.op for t in tables) == ["call_function", "get_attr"]
    float_table = next(t for t in tables if t.op == "get_attr")
    assert float_table.target == "users.weight"


def test_global_none_quantizes_nothing() -> None:
    converted = _quantize(TwoTables(), EmbeddingQuantizer().set_global(None))
    assert_node_occurrence(converted, {qdq_ops.DEQUANTIZE_PER_CHANNEL: 0})


def test_validate_rejects_table_computed_from_inputs() -> None:
    with pytest.raises(
        AnnotationError, match=r"'embedding'.*computed in the graph.*'mul'.*not module constants"
    ):
        _quantize(ComputedTable())


def test_table_derived_from_parameter_is_stored_quantized() -> None:
    """``weight.float()[:8] * 2`` is constant: convert stores it as uint8 rows, so only the
    dequantize and the lookup run."""
    ops = _qdq_and_compute(_quantize(DerivedTable()))
    assert ops[-2:] == [
        "quantized_decomposed.dequantize_per_channel.default",
        "aten.embedding.default",
    ]
    assert "aten.mul.Tensor" not in ops
    assert not any("quantize_per" in op and "dequantize" not in op for op in ops)


def test_computed_table_can_be_excluded() -> None:
    quantizer = EmbeddingQuantizer().set_operator_type(aten.embedding.default, None)
    converted = _quantize(ComputedTable(), quantizer)
    assert_node_occurrence(converted, {qdq_ops.DEQUANTIZE_PER_CHANNEL: 0})


def test_validate_rejects_quantized_indices() -> None:
    gm = export_model(EmbeddingModule())
    quantizer = EmbeddingQuantizer()
    quantizer.annotate(gm)
    (node,) = [n for n in gm.graph.nodes if n.target == aten.embedding.default]
    quantizer.validate(gm)  # the quantizer's own annotation passes
    annotate_input(node, node.args[1], get_embedding_quantization_config().weight)
    with pytest.raises(AnnotationError, match=r"'embedding'.*input 'indices'.*integers"):
        quantizer.validate(gm)


# ------------------------------------------------------------------ differential vs torchao


def _qdq_and_compute(gm) -> list[str]:
    names = [str(t) for t in ops_in_order(gm)]
    return [n for n in names if n.startswith(("aten.", "quantized_decomposed."))]


def _run(lib_name: str, model: nn.Module, calibration: list[tuple]):
    if lib_name == "torchao":
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e as convert
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e as prepare
        from torchao.quantization.pt2e.quantizer.embedding_quantizer import (
            EmbeddingQuantizer as Peer,
        )

        quantizer = Peer()
    else:
        prepare, convert, quantizer = prepare_pt2e, convert_pt2e, EmbeddingQuantizer()
    exported = torch.export.export(copy.deepcopy(model), calibration[0]).module()
    prepared = prepare(exported, quantizer)
    for batch in calibration:
        prepared(*batch)
    return convert(prepared)


@pytest.mark.torchao
@pytest.mark.parametrize("model_cls", [EmbeddingModule, TwoTables, DerivedTable])
def test_same_as_torchao(model_cls) -> None:
    pytest.importorskip("torchao")
    torch.manual_seed(0)
    model = model_cls().eval()
    calibration = [model.example_inputs() for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _run("torchao", model, calibration)
        ours = _run("pt2e_quant", model, calibration)
    assert _qdq_and_compute(ours) == _qdq_and_compute(theirs)
    assert qdq_ops.DEQUANTIZE_PER_CHANNEL in set(ops_in_order(ours))
    (indices,) = model.example_inputs()
    with torch.no_grad():
        assert torch.equal(ours(indices), theirs(indices))
        assert not torch.equal(ours(indices), model(indices))
