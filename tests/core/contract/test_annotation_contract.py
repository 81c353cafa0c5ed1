"""The annotation helpers' contract beyond writing specs: claiming, removing, clearing.

Composed quantizers rely on ``is_annotated`` meaning "an annotator claimed this node", not
"some spec was written on it": an annotation with only input specs (e.g. left by a helper)
must not stop a later annotator. Removing an annotation must really remove it, and
``clear_annotations`` reports whether it changed anything, like every pass.
"""

from __future__ import annotations

import torch

from pt2e_quant.contract.annotation import (
    annotate_input,
    clear_annotations,
    get_annotation,
    is_annotated,
    mark_annotated,
    set_annotation,
)
from tests.core.contract.quantizer_fixtures import UINT8_MINMAX


def _two_nodes() -> tuple[torch.fx.Node, torch.fx.Node]:
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    return x, graph.call_function(torch.ops.aten.relu.default, (x,))


def test_written_but_unclaimed_node_is_not_annotated() -> None:
    x, relu = _two_nodes()
    annotate_input(relu, x, UINT8_MINMAX)
    assert get_annotation(relu) is not None and not is_annotated(relu)
    mark_annotated([relu])
    assert is_annotated(relu)


def test_set_annotation_none_removes_it() -> None:
    x, relu = _two_nodes()
    mark_annotated([relu])
    set_annotation(relu, None)
    assert get_annotation(relu) is None and not is_annotated(relu)


def test_clear_annotations_reports_whether_it_removed_any() -> None:
    x, relu = _two_nodes()
    mark_annotated([relu])
    assert clear_annotations([x, relu]) is True
    assert get_annotation(relu) is None
    assert clear_annotations([x, relu]) is False
