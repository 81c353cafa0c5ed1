"""torchao's "PyTorch 2 Export Quantization-Aware Training" tutorial, migrated.

pt2e_quant_qat.rst exercises what PTQ does not: prepare_qat_pt2e's conv-bn rewrite, training
through fake quants, disable_observer, the tutorial's batch-norm freezing loop,
move_exported_model_to_eval / allow_exported_model_train_eval and state_dict checkpoints. After
the import swap, the trained fake-quant models, their checkpoints and the converted models must
match torchao bit for bit, and a checkpoint saved mid-training from torchao must load into ours.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from tests._migration_harness import (
    Api,
    assert_same,
    equal_outputs,
    ours,
    peer,
    random_batches,
    run_both,
    tutorial_model,
)

pytestmark = pytest.mark.torchao


def _freeze_batch_norm_stats(prepared: torch.fx.GraphModule) -> int:
    """The tutorial's "Freezing BN" loop. It lists ``_native_batch_norm_legit`` /
    ``cudnn_batch_norm``, which torch 2.13's export no longer emits for either library, so the
    published loop is a silent no-op on both; ``aten.batch_norm`` (training flag also at
    args[5]) is what both prepared graphs hold."""
    frozen = 0
    for n in prepared.graph.nodes:
        if n.target in (
            torch.ops.aten._native_batch_norm_legit.default,
            torch.ops.aten.cudnn_batch_norm.default,
            torch.ops.aten.batch_norm.default,
        ):
            args = list(n.args)
            args[5] = False
            n.args = tuple(args)
            frozen += 1
    prepared.recompile()
    return frozen


def qat_tutorial(api: Api, model: nn.Module, steps: list[tuple], checkpoint: dict | None = None):
    """pt2e_quant_qat.rst: export a training-mode model, get_symmetric_quantization_config(
    is_qat=True), prepare_qat_pt2e, train (SGD, fixed data), disable observers and freeze BN
    after a few steps, checkpoint via state_dict, convert a deep copy, move it to eval.

    With ``checkpoint``, the prepared model loads that state_dict before converting (the
    tutorial's "Saving and Loading Model Checkpoints": export and prepare the same way, then
    ``load_state_dict``). Returns (prepared, state_dict, converted)."""
    torch.manual_seed(0)
    exported_model = torch.export.export(copy.deepcopy(model).train(), steps[0][:1]).module()
    quantizer = api.XNNPACKQuantizer()
    quantizer.set_global(api.get_symmetric_quantization_config(is_qat=True))
    prepared_model = api.prepare_qat_pt2e(exported_model, quantizer)
    if checkpoint is None:
        optimizer = torch.optim.SGD(prepared_model.parameters(), lr=0.05)
        for step, (image, target) in enumerate(steps):
            if step == len(steps) - 1:
                prepared_model.apply(api.pt2e.disable_observer)
                assert _freeze_batch_norm_stats(prepared_model) == sum(
                    isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
                )
            loss = nn.functional.mse_loss(prepared_model(image), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    else:
        prepared_model.load_state_dict(checkpoint)
    state = copy.deepcopy(prepared_model.state_dict())
    quantized_model = api.convert_pt2e(copy.deepcopy(prepared_model))
    api.pt2e.move_exported_model_to_eval(quantized_model)
    return prepared_model, state, quantized_model


def _qat_steps(model: nn.Module, count: int = 3) -> list[tuple]:
    images = random_batches(model.example_inputs(), count, batch=2)
    with torch.no_grad():
        shape = copy.deepcopy(model).eval()(*images[0]).shape
    torch.manual_seed(2)
    return [(image[0], torch.randn(shape)) for image in images]


#: ExecuTorch's QAT conv-bn annotator exports its pattern graphs once per session (~15-20 s,
#: then cached by ``peer_pattern_cache``), so the conv-bn QAT flows are also marked slow.
SLOW_PEER_QAT = pytest.mark.slow


@pytest.mark.executorch
@pytest.mark.parametrize(
    "name", ["tutorial_m", pytest.param("conv_bn_relu_chain", marks=SLOW_PEER_QAT)]
)
def test_qat_tutorial_xnnpack(name: str, peer_pattern_cache) -> None:
    model = tutorial_model(name)
    steps = _qat_steps(model)
    theirs, mine = run_both(lambda api: qat_tutorial(api, model, steps), with_xnnpack=True)
    (their_prepared, their_state, their_q), (my_prepared, my_state, my_q) = theirs, mine
    test_input = steps[0][:1]
    # after training: the prepared (fake-quant) models and their checkpoints agree bit for bit
    assert their_state.keys() == my_state.keys()
    assert all(torch.equal(their_state[k], my_state[k]) for k in their_state)
    assert equal_outputs(their_prepared, my_prepared, test_input)
    assert_same(their_q, my_q, test_input)


@SLOW_PEER_QAT
@pytest.mark.executorch
def test_qat_checkpoint_from_torchao_loads_into_ours(peer_pattern_cache) -> None:
    """Migrating mid-training: a QAT checkpoint saved from torchao's prepared model loads into
    ours (same export, same quantizer settings) and converts to the same int8 model."""
    model = tutorial_model("conv_bn_relu_chain")
    steps = _qat_steps(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, their_state, their_q = qat_tutorial(peer(with_xnnpack=True), model, steps)
        _, _, my_q = qat_tutorial(ours(), model, steps, checkpoint=their_state)
    assert_same(their_q, my_q, steps[0][:1])


@SLOW_PEER_QAT
@pytest.mark.executorch
def test_qat_tutorial_train_eval_switch(peer_pattern_cache) -> None:
    """allow_exported_model_train_eval: after it, ``m.eval()`` / ``m.train()`` on the prepared
    model behave the same for both libraries (batch norm uses running stats in eval)."""
    model = tutorial_model("conv_bn_relu_chain")
    steps = _qat_steps(model, count=1)

    def program(api: Api):
        prepared, _, _ = qat_tutorial(api, model, steps)
        api.pt2e.allow_exported_model_train_eval(prepared)
        prepared.eval()
        return prepared

    theirs, mine = run_both(program, with_xnnpack=True)
    # (torchao's patched eval() leaves ``theirs.training`` True; ours clears it too)
    assert not mine.training
    flags = [n.args[5] for n in mine.graph.nodes if n.target == torch.ops.aten.batch_norm.default]
    assert flags and not any(flags)
    assert equal_outputs(theirs, mine, steps[0][:1])


class ConvBn(nn.Module):
    """``x ─ Conv2d(3→4, k3) ─ BatchNorm2d ─ out``, the smallest model QAT rewrites."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def test_qat_on_eval_mode_export_matches_torchao(peer_pattern_cache) -> None:
    torch.manual_seed(0)
    model = ConvBn().eval()
    example_inputs = (torch.randn(2, 3, 8, 8),)

    def program(api: Api):
        exported = torch.export.export(copy.deepcopy(model), example_inputs).module()
        quantizer = api.xiq.X86InductorQuantizer()
        quantizer.set_global(api.xiq.get_default_x86_inductor_quantization_config(is_qat=True))
        return api.prepare_qat_pt2e(exported, quantizer)

    theirs, mine = run_both(program)
    flag = {
        api: [n.args[5] for n in gm.graph.nodes if n.target == torch.ops.aten.batch_norm.default]
        for api, gm in (("torchao", theirs), ("ours", mine))
    }
    assert flag["ours"] == flag["torchao"] == [True]
    assert equal_outputs(theirs, mine, (torch.randn(2, 3, 8, 8),))
