"""QAT conv / transposed conv + batch norm, against torchao: the same graphs, node for node.

torchao's prepare_qat_pt2e replaces each conv -> bn by its folding simulation, inserted right
before the batch norm's first reader; its convert re-inserts weight q / dq and conv there. So
in both graphs the input's quantize / dequantize come before the weight's dequantize, unlike
post-training quantization where the weight's comes first. Ours must list the same ops in the
same order after prepare (fake-quant modules included) and after convert (every q / dq and
aten op with its literal arguments, so two convs' q / dq cannot swap unnoticed), and compute
bit-identical outputs.

Configs: ExecuTorch's XNNPACK QAT config per channel and per tensor, torchao's X86 QAT config
(which fuses conv2d + bn only; torchao's QAT rewrite has no linear + bn pattern). Every case
goes through torchao's slow pattern exports, cached for the session (``peer_pattern_cache``).
"""

from __future__ import annotations

import copy
import importlib
import warnings

import pytest
import torch
from torch import nn
from torch.fx import GraphModule, Node

import pt2e_quant
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config
from quantizers.x86_inductor.quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from tests.graph_check import functional_op_name
from tests.models import ConvBnBranchesAdd, ConvTWithBNRelu, ConvWithBNRelu

pytestmark = pytest.mark.torchao
pytest.importorskip("torchao")

_TRAINING_STEPS = 2


def _xnnpack_quantizers(per_channel: bool):
    pytest.importorskip("executorch")
    peer = importlib.import_module("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    kwargs = {"is_per_channel": per_channel, "is_qat": True}
    return (
        peer.XNNPACKQuantizer().set_global(peer.get_symmetric_quantization_config(**kwargs)),
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(**kwargs)),
    )


def _x86_quantizers():
    from tests.quantizers.x86_inductor._x86_inductor_peer_run import torchao_x86_module

    peer = torchao_x86_module()
    return (
        peer.X86InductorQuantizer().set_global(
            peer.get_default_x86_inductor_quantization_config(is_qat=True)
        ),
        X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config(is_qat=True)
        ),
    )


#: name -> (peer quantizer, our quantizer), each built fresh per run
_CONFIGS = {
    "xnnpack_per_channel": lambda: _xnnpack_quantizers(per_channel=True),
    "xnnpack_per_tensor": lambda: _xnnpack_quantizers(per_channel=False),
    "x86": _x86_quantizers,
}

#: layer kind -> model factory (relu or not)
_LAYERS = {
    "conv1d": lambda relu: ConvWithBNRelu(relu, dim=1),
    "conv2d": lambda relu: ConvWithBNRelu(relu, dim=2),
    "conv2d_no_bias": lambda relu: ConvWithBNRelu(relu, dim=2, bias=False),
    "conv_transpose1d": lambda relu: ConvTWithBNRelu(dim=1, relu=relu),
    "conv_transpose2d": lambda relu: ConvTWithBNRelu(dim=2, relu=relu),
}


def _cases():
    for config in _CONFIGS:
        # torchao's X86 quantizer fuses batch norm after conv2d only: it quantizes conv1d only
        # when a relu reads it directly, and leaves transposed convs float
        layers = ("conv2d", "conv2d_no_bias") if config == "x86" else tuple(_LAYERS)
        for layer in layers:
            for relu in (False, True):
                yield pytest.param(config, layer, relu, id=f"{config}-{layer}{'-relu' * relu}")


def _run_qat(
    ours: bool, quantizer, exported: GraphModule, batches: list[torch.Tensor]
) -> tuple[list[str], GraphModule]:
    """prepare_qat_pt2e, a few training-mode steps, move to eval, convert; returns the
    prepared graph's op list (see :func:`_prepared_ops`) and the converted model."""
    if ours:
        prepare, convert = pt2e_quant.prepare_qat_pt2e, pt2e_quant.convert_pt2e
        to_eval = pt2e_quant.move_exported_model_to_eval
    else:
        pipeline = importlib.import_module("torchao.quantization.pt2e.quantize_pt2e")
        prepare, convert = pipeline.prepare_qat_pt2e, pipeline.convert_pt2e
        to_eval = importlib.import_module("torchao.quantization.pt2e").move_exported_model_to_eval
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(copy.deepcopy(exported), quantizer)
        prepared_order = _prepared_ops(prepared)
        for batch in batches[:_TRAINING_STEPS]:
            prepared(batch)
        to_eval(prepared)
        return prepared_order, convert(prepared)


def _prepared_ops(gm: GraphModule) -> list[str]:
    """Call nodes in order: aten ops by name, modules (fake-quants) by class name."""
    return [
        type(gm.get_submodule(str(n.target))).__name__ if n.op == "call_module" else str(n.target)
        for n in gm.graph.nodes
        if n.op in ("call_function", "call_module")
    ]


def _literal(value: object) -> object:
    if isinstance(value, Node):
        return "%"
    if isinstance(value, (list, tuple)):
        return tuple(map(_literal, value))
    return value


def _converted_ops(gm: GraphModule) -> list[tuple]:
    """q / dq and aten ops in node order with their literal arguments (a node is ``%``)."""
    return [
        (functional_op_name(str(n.target)), _literal(n.args), _literal(n.kwargs))
        for n in gm.graph.nodes
        if n.op == "call_function" and str(n.target).startswith(("aten.", "quantized_decomposed."))
    ]


def _is_batch_counter(node: Node) -> bool:
    return (
        node.target is torch.ops.aten.add_.Tensor
        and isinstance(node.args[0], Node)
        and str(node.args[0].target).endswith("num_batches_tracked")
    )


def _drop_peer_batch_counter(peer: GraphModule, model: nn.Module) -> None:
    """torchao's convert erases the folded batch norm's ``num_batches_tracked += 1`` only
    when the module is a BatchNorm2d; ours drops every folded batch norm's (a deliberate
    difference). Removed here, after checking it is the only thing left behind."""
    counters = [n for n in peer.graph.nodes if _is_batch_counter(n)]
    one_d = any(isinstance(m, nn.BatchNorm1d) for m in model.modules())
    assert len(counters) == (1 if one_d else 0)
    for node in counters:
        peer.graph.erase_node(node)


def _assert_same_as_torchao(config: str, model: nn.Module, peer_axis_bug: bool = False) -> None:
    """Same prepared and converted node order as torchao, and bit-identical outputs.

    ``peer_axis_bug``: per channel, torchao's fused fake-quant splits a transposed conv's
    weight along axis 0 (test_transposed_conv_weights_quantize_along_output_channels_unlike_
    the_peer), ours along axis 1; training then learns other qparams, so only the op names
    are compared, in order.
    """
    torch.manual_seed(0)
    batches = [torch.randn_like(model.example_inputs()[0]) for _ in range(_TRAINING_STEPS + 1)]
    exported = torch.export.export(copy.deepcopy(model).train(), (batches[0],)).module()
    peer_quantizer, our_quantizer = _CONFIGS[config]()
    peer_prepared, peer = _run_qat(False, peer_quantizer, exported, batches)
    ours_prepared, ours = _run_qat(True, our_quantizer, exported, batches)
    _drop_peer_batch_counter(peer, model)

    ours_ops, peer_ops = _converted_ops(ours), _converted_ops(peer)
    assert any(op.startswith("quantized_decomposed.") for op, *_ in peer_ops)
    if peer_axis_bug:
        assert [op for op, *_ in ours_ops] == [op for op, *_ in peer_ops]
    else:
        assert ours_ops == peer_ops
        assert torch.equal(ours(batches[-1]), peer(batches[-1]))
    assert ours_prepared == peer_prepared


@pytest.mark.parametrize(("config", "layer", "relu"), list(_cases()))
def test_qat_conv_bn_nodes_in_torchao_order(
    peer_pattern_cache, config: str, layer: str, relu: bool
) -> None:
    peer_axis_bug = layer.startswith("conv_transpose") and config == "xnnpack_per_channel"
    _assert_same_as_torchao(config, _LAYERS[layer](relu), peer_axis_bug)


@pytest.mark.parametrize("config", ["xnnpack_per_channel", "x86"])
def test_qat_conv_bn_branches_rewritten_in_torchao_order(peer_pattern_cache, config: str) -> None:
    """Two conv-bn branches meeting at an add: torchao re-inserts both right before the add,
    the conv with bias first, so the converted branches come out in the other order than
    export traced them; ours must too."""
    _assert_same_as_torchao(config, ConvBnBranchesAdd())
