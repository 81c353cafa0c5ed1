"""Every aten op family the library names, spelled once.

Rules, passes, predictions and the train/eval switch all ask "is this node a conv?", "a
dropout?", "a view?". Each answer is a frozenset of aten overloads defined here and imported
everywhere else (a test fails when a family member is spelled outside this module), so a torch
release that adds an overload, or a spelling export starts to record, is handled in one place.

Families are small and named after what the model wrote (``CONV2D_OPS``: ``F.conv2d`` and
``nn.Conv2d``, with and without ``padding="same"``); unions name what a rule means
(``CONV_OPS``). In-place spellings sit in the family of their functional op, because export
records ``relu_`` for ``nn.ReLU(inplace=True)``.
"""

from __future__ import annotations

import torch

__all__ = [
    "ACTIVATION_OPS",
    "ADAPTIVE_AVG_POOL2D_OPS",
    "ADD_OPS",
    "ATTENTION_OPS",
    "AVG_POOL2D_OPS",
    "BATCH_NORM_MODE_OVERLOADS",
    "BATCH_NORM_OPS",
    "CAT_OPS",
    "CLAMP_OPS",
    "COMPOSITE_BATCH_NORM_OPS",
    "CONV1D_OPS",
    "CONV2D_OPS",
    "CONV3D_OPS",
    "CONVOLUTION_OPS",
    "CONV_OPS",
    "CONV_TRANSPOSE_OPS",
    "DIV_OPS",
    "DROPOUT_OPS",
    "EINSUM_OPS",
    "EMBEDDING_OPS",
    "FLAGGED_BATCH_NORM_OPS",
    "FLATTEN_OPS",
    "GELU_OPS",
    "HARDSIGMOID_OPS",
    "HARDSWISH_OPS",
    "HARDTANH_OPS",
    "INPLACE_DROPOUT_OPS",
    "INSTANCE_NORM_OPS",
    "LAYER_NORM_OPS",
    "LEAKY_RELU_OPS",
    "LINEAR_OPS",
    "MATMUL_OPS",
    "MATRIX_TRANSPOSE_OPS",
    "MAX_POOL2D_OPS",
    "MAY_RETURN_INPUT_OPS",
    "MEAN_OPS",
    "MM_OPS",
    "PLAIN_MM_OPS",
    "ADDMM_OPS",
    "MUL_OPS",
    "NATIVE_BATCH_NORM_OPS",
    "NATIVE_DROPOUT_OPS",
    "NORM_OPS",
    "PERMUTE_OPS",
    "POOL_OPS",
    "RANDOM_MASK_PACKETS",
    "RECURRENT_OPS",
    "RELU6_OPS",
    "RELU_OPS",
    "RMS_NORM_OPS",
    "RESHAPE_OPS",
    "RRELU_OPS",
    "SIGMOID_OPS",
    "SILU_OPS",
    "SLICE_OPS",
    "SOFTMAX_OPS",
    "SQUEEZE_OPS",
    "STACK_OPS",
    "SUB_OPS",
    "SUM_OPS",
    "TANH_OPS",
    "TRANSPOSE_OPS",
    "UNINITIALIZED_OPS",
    "UNSQUEEZE_OPS",
    "UPSAMPLE_OPS",
    "VIEW_OPS",
]

_aten = torch.ops.aten


def _overloads(*names: str) -> frozenset:
    """``"sub.Tensor"`` -> ``aten.sub.Tensor``; names this torch build lacks are skipped, so a
    family can list an overload that only some torch releases have."""
    found = set()
    for name in names:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(_aten, packet, None), overload or "default", None)
        if op is not None:
            found.add(op)
    return frozenset(found)


# ------------------------------------------------------------------- convolution and matmul

CONV1D_OPS = _overloads("conv1d.default", "conv1d.padding")
CONV2D_OPS = _overloads("conv2d.default", "conv2d.padding")
CONV3D_OPS = _overloads("conv3d.default", "conv3d.padding")
CONV_OPS = CONV1D_OPS | CONV2D_OPS | CONV3D_OPS
CONV_TRANSPOSE_OPS = _overloads(
    "conv_transpose1d.default", "conv_transpose2d.input", "conv_transpose3d.input"
)
#: the one spelling of every convolution after ``run_decompositions``
CONVOLUTION_OPS = _overloads("convolution.default")
LINEAR_OPS = _overloads("linear.default")
MATMUL_OPS = _overloads("matmul.default")
#: ``addmm(bias, x, w)`` with ``w`` (in, out): Hugging Face GPT-2's ``Conv1D`` projection
ADDMM_OPS = _overloads("addmm.default")
#: the 2-D matrix product alone (``x @ w`` of two matrices after decomposition)
PLAIN_MM_OPS = _overloads("mm.default")
#: the matrix products decompositions and hand-written models spell out
MM_OPS = PLAIN_MM_OPS | _overloads("bmm.default", "baddbmm.default") | ADDMM_OPS

# ---------------------------------------------------------------------------- element-wise

ADD_OPS = _overloads("add.Tensor", "add_.Tensor")
SUB_OPS = _overloads("sub.Tensor", "sub_.Tensor", "rsub.Scalar")
MUL_OPS = _overloads("mul.Tensor", "mul_.Tensor")
DIV_OPS = _overloads("div.Tensor", "div_.Tensor", "div.Tensor_mode")
CAT_OPS = _overloads("cat.default", "concat.default")
STACK_OPS = _overloads("stack.default")
EINSUM_OPS = _overloads("einsum.default")

# ----------------------------------------------------------------------------- activations

RELU_OPS = _overloads("relu.default", "relu_.default")
RELU6_OPS = _overloads("relu6.default")  # F.relu6; nn.ReLU6 exports as hardtanh
HARDTANH_OPS = _overloads("hardtanh.default", "hardtanh_.default")
CLAMP_OPS = _overloads("clamp.default")
HARDSWISH_OPS = _overloads("hardswish.default", "hardswish_.default")
HARDSIGMOID_OPS = _overloads("hardsigmoid.default", "hardsigmoid_.default")
SILU_OPS = _overloads("silu.default", "silu_.default")
GELU_OPS = _overloads("gelu.default", "gelu_.default")
LEAKY_RELU_OPS = _overloads("leaky_relu.default", "leaky_relu_.default")
TANH_OPS = _overloads("tanh.default", "tanh_.default")
SIGMOID_OPS = _overloads("sigmoid.default")
SOFTMAX_OPS = _overloads("softmax.int", "_softmax.default", "log_softmax.int")
#: RReLU draws a random slope while training and uses the mean slope otherwise
RRELU_OPS = _overloads(
    "rrelu.default", "rrelu_.default", "rrelu_with_noise.default", "rrelu_with_noise_.default"
)
#: what a coverage report counts as an activation (the in-place spellings prepare keeps)
ACTIVATION_OPS = (
    RELU_OPS
    | RELU6_OPS
    | HARDTANH_OPS
    | CLAMP_OPS
    | HARDSWISH_OPS
    | HARDSIGMOID_OPS
    | SILU_OPS
    | SIGMOID_OPS
    | SOFTMAX_OPS
    | _overloads(
        "gelu.default",
        "tanh.default",
        "leaky_relu.default",
        "elu.default",
        "prelu.default",
        "mish.default",
    )
)

# ---------------------------------------------------------------------- pooling, reductions

MAX_POOL2D_OPS = _overloads("max_pool2d.default")
AVG_POOL2D_OPS = _overloads("avg_pool2d.default")
ADAPTIVE_AVG_POOL2D_OPS = _overloads("adaptive_avg_pool2d.default")
POOL_OPS = (
    MAX_POOL2D_OPS
    | AVG_POOL2D_OPS
    | ADAPTIVE_AVG_POOL2D_OPS
    | _overloads(
        "max_pool1d.default",
        "max_pool3d.default",
        "avg_pool1d.default",
        "avg_pool3d.default",
        "adaptive_avg_pool1d.default",
        "adaptive_max_pool2d.default",
    )
)
MEAN_OPS = _overloads("mean.dim", "mean.default")
SUM_OPS = _overloads("sum.dim_IntList")

# ---------------------------------------------------------------------------- normalization

_BN_LEGIT = _aten._native_batch_norm_legit.default
_BN_LEGIT_NO_TRAINING = _aten._native_batch_norm_legit_no_training.default
_BN_WITH_UPDATE = _aten._batch_norm_with_update.default
_BN_NO_UPDATE = _aten._batch_norm_no_update.default

#: the batch-norm spellings export records before decomposition
BATCH_NORM_OPS = frozenset({_aten.batch_norm.default, _BN_LEGIT, _BN_LEGIT_NO_TRAINING})
NATIVE_BATCH_NORM_OPS = _overloads("native_batch_norm.default")
#: ``batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
#: cudnn_enabled)``: what export records for every ``nn.BatchNorm*`` (``nn.SyncBatchNorm``
#: included) and what the QAT conv-bn simulation emits
COMPOSITE_BATCH_NORM_OPS = frozenset({_aten.batch_norm.default})
#: batch norms that say training or inference with a ``training`` argument
#: (``ExportedProgram.run_decompositions`` leaves ``_native_batch_norm_legit_functional`` of a
#: training batch norm)
FLAGGED_BATCH_NORM_OPS = frozenset({_aten.batch_norm.default, _BN_LEGIT}) | _overloads(
    "native_batch_norm.default",
    "_native_batch_norm_legit_functional.default",
    "cudnn_batch_norm.default",
    "miopen_batch_norm.default",
)
#: instance norm keeps running statistics too (``track_running_stats=True``); its flag is
#: called ``use_input_stats``
INSTANCE_NORM_OPS = _overloads("instance_norm.default")
#: (training overload, inference overload) of the batch norms that say their mode by which
#: overload they are: the no-training ``_native_batch_norm_legit`` takes no flag, and
#: ``_batch_norm_with_update`` / ``_no_update`` take the same arguments
BATCH_NORM_MODE_OVERLOADS = (
    (_BN_LEGIT, _BN_LEGIT_NO_TRAINING),
    (_BN_WITH_UPDATE, _BN_NO_UPDATE),
)
#: ``layer_norm(x, normalized_shape, weight, bias, eps)``: an affine over the last dims
LAYER_NORM_OPS = _overloads("layer_norm.default")
#: ``rms_norm(x, normalized_shape, weight, eps)``: a scale over the last dims, no bias
RMS_NORM_OPS = _overloads("rms_norm.default")
NORM_OPS = (
    BATCH_NORM_OPS
    | INSTANCE_NORM_OPS
    | LAYER_NORM_OPS
    | RMS_NORM_OPS
    | _overloads("group_norm.default", "native_layer_norm.default")
)

# ---------------------------------------------------------------------------------- dropout

#: the functional dropouts; each takes its ``train`` flag third and, not training, may hand
#: back its input itself
DROPOUT_OPS = _overloads(
    "dropout.default",
    "feature_dropout.default",
    "alpha_dropout.default",
    "feature_alpha_dropout.default",
)
#: ``nn.Dropout(inplace=True)`` and friends
INPLACE_DROPOUT_OPS = _overloads(
    "dropout_.default",
    "feature_dropout_.default",
    "alpha_dropout_.default",
    "feature_alpha_dropout_.default",
)
#: what ``run_decompositions`` makes of a functional dropout: ``(output, mask)``
NATIVE_DROPOUT_OPS = _overloads("native_dropout.default")
#: what ``run_decompositions`` makes of an in-place dropout: a random mask, with no flag left
RANDOM_MASK_PACKETS = frozenset({_aten.bernoulli, _aten.bernoulli_})

# -------------------------------------------------------------------------- views and shapes

# each view op and its ``_copy`` twin (what ``run_decompositions`` and edge lowering record)
VIEW_OPS = _overloads("view.default", "view_copy.default")
RESHAPE_OPS = _overloads("reshape.default")
FLATTEN_OPS = _overloads("flatten.using_ints")
PERMUTE_OPS = _overloads("permute.default", "permute_copy.default")
TRANSPOSE_OPS = _overloads("transpose.int")
MATRIX_TRANSPOSE_OPS = _overloads("t.default")
SQUEEZE_OPS = _overloads("squeeze.default", "squeeze.dim", "squeeze.dims", "squeeze_copy.dim")
UNSQUEEZE_OPS = _overloads("unsqueeze.default", "unsqueeze_copy.default")
SLICE_OPS = _overloads("slice.Tensor", "slice_copy.Tensor")

#: ops whose schema promises a fresh result but whose implementation can hand back their input
#: itself: dropout when not training (or with p = 0), ``type_as`` / ``sum_to_size`` /
#: ``atleast_*d`` when nothing needs converting, ``einsum`` for an identity or permuting
#: equation. An in-place op on such a result mutates the input too.
MAY_RETURN_INPUT_OPS = (
    DROPOUT_OPS
    | EINSUM_OPS
    | _overloads(
        "type_as.default",
        "sum_to_size.default",
        "atleast_1d.default",
        "atleast_2d.default",
        "atleast_3d.default",
    )
)

# ------------------------------------------------------------------------------ the rest

#: every overload export produces for an embedding lookup; each names its table ``weight``
EMBEDDING_OPS = _overloads(
    "embedding.default",
    "embedding_bag.default",
    "embedding_bag.padding_idx",
    "_embedding_bag.default",
    "_embedding_bag_forward_only.default",
)
ATTENTION_OPS = _overloads("scaled_dot_product_attention.default")
RECURRENT_OPS = _overloads("lstm.input", "gru.input", "rnn_tanh.input")
UPSAMPLE_OPS = _overloads("upsample_nearest2d.vec", "upsample_bilinear2d.vec")
#: factories whose result is uninitialised memory: pure by schema, but with no value to
#: pre-compute
UNINITIALIZED_OPS = _overloads(
    "empty.memory_format",
    "empty_like.default",
    "empty_strided.default",
    "empty_permuted.default",
    "new_empty.default",
    "new_empty_strided.default",
)
