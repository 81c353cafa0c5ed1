"""X86InductorQuantizer: a linear's post-op (gelu, tanh, leaky_relu, add [-> relu]) keeps the
int8-in/int8-out op after it (cat, max-pool, flatten) on int8, in functional and module form.

The recipe fuses ``linear -> post-op`` into one kernel; only the output of a fused pattern
lets the following cat / pool / flatten run on int8. We recognise the post-op from aten ops,
so ``F.gelu`` fuses like ``nn.GELU``. torchao matches module source partitions, so it fuses
only the module forms (and a plain ``+``): after a functional post-op its cat / pool / flatten
stays float, with fewer q/dq than ours. That is a deliberate difference; the values agree
(bit for bit where the int8 op's shared qparams equal torchao's, see below).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tests.graph_check import assert_node_occurrence, qdq_and_compute_ops
from tests.models.x86_patterns import (
    LINEAR_POST_OPS,
    LinearPostOpThen,
)
from tests.quantizers.x86_inductor._x86_inductor_peer_run import calibration_batches, run_pipeline
from tests.quantizers.x86_inductor._x86_inductor_quantize import (
    qdq_counts,
    quantize,
)

FOLLOWERS = ("cat", "maxpool", "flatten")

#: Ours, for every post-op: the follower's input and output are int8 (one more q/dq pair
#: than without fusion; cat: one per branch).
OURS = {"cat": qdq_counts(4, 5, 3), "maxpool": qdq_counts(3, 3, 2), "flatten": qdq_counts(3, 3, 2)}
#: torchao after a functional post-op it does not fuse: the follower runs in float.
TORCHAO_UNFUSED = {
    "cat": qdq_counts(2, 3, 3),
    "maxpool": qdq_counts(2, 2, 2),
    "flatten": qdq_counts(2, 2, 2),
}
FUNCTIONAL = ("F.gelu", "torch.tanh", "F.leaky_relu", "add_torch.relu")
SAME_AS_TORCHAO = tuple(name for name in LINEAR_POST_OPS if name not in FUNCTIONAL)


@pytest.mark.parametrize("follower", FOLLOWERS)
@pytest.mark.parametrize("post", sorted(LINEAR_POST_OPS))
def test_linear_post_op_keeps_the_following_op_int8(post: str, follower: str) -> None:
    assert_node_occurrence(quantize(LinearPostOpThen(post, follower).eval()), OURS[follower])


def _both(post: str, follower: str):
    torch.manual_seed(0)
    model = LinearPostOpThen(post, follower).eval()
    calibration = calibration_batches(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = run_pipeline(False, model, calibration, "static", strict=False)
        ours = run_pipeline(True, model, calibration, "static", strict=False)
    with torch.no_grad():
        outputs = ours(*calibration[-1]), theirs(*calibration[-1])
    return ours, theirs, outputs


@pytest.mark.torchao
@pytest.mark.parametrize("follower", ("cat", "flatten"))
@pytest.mark.parametrize("post", FUNCTIONAL)
def test_functional_post_op_differs_from_torchao_in_qdq_only(post: str, follower: str) -> None:
    """Ours quantizes the post-op's output into the cat / flatten and torchao only after it.
    The values are bit-identical: a cat's / flatten's output holds exactly its inputs'
    values, so the one shared observer sees the same range torchao's observer after it sees,
    and re-quantizing with the same qparams changes nothing."""
    pytest.importorskip("torchao")
    ours, theirs, (ours_out, theirs_out) = _both(post, follower)
    assert_node_occurrence(ours, OURS[follower])
    assert_node_occurrence(theirs, TORCHAO_UNFUSED[follower])
    assert torch.equal(ours_out, theirs_out)


@pytest.mark.torchao
@pytest.mark.parametrize("post", FUNCTIONAL)
def test_functional_post_op_before_maxpool_uses_the_pool_input_range(post: str) -> None:
    """Not bit-identical in general, on purpose: ours runs the max-pool on int8 with the
    qparams of its *input* (the post-op output, shared with the pool's output), while
    torchao, leaving the pool float, quantizes the pool's output with that output's own
    (usually narrower) range. Both approximate the same float model; they differ by less
    than one of our quantization steps (the scale on the pool's input)."""
    pytest.importorskip("torchao")
    ours, theirs, (ours_out, theirs_out) = _both(post, "maxpool")
    assert_node_occurrence(ours, OURS["maxpool"])
    assert_node_occurrence(theirs, TORCHAO_UNFUSED["maxpool"])
    pool = next(n for n in ours.graph.nodes if n.target == torch.ops.aten.max_pool2d.default)
    step = pool.args[0].args[1]  # the dequantize feeding the pool: (q, scale, zero_point, ...)
    assert (ours_out - theirs_out).abs().max() < step


@pytest.mark.torchao
@pytest.mark.parametrize("follower", FOLLOWERS)
@pytest.mark.parametrize("post", SAME_AS_TORCHAO)
def test_module_post_op_matches_torchao(post: str, follower: str) -> None:
    """Module post-ops (and a plain ``+``) are fused by both: same q/dq, same outputs."""
    pytest.importorskip("torchao")
    ours, theirs, (ours_out, theirs_out) = _both(post, follower)
    assert_node_occurrence(ours, OURS[follower])
    assert qdq_and_compute_ops(ours) == qdq_and_compute_ops(theirs)
    assert torch.equal(ours_out, theirs_out)
