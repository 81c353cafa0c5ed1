"""Two quantizers on one model: uint8 per-row embedding tables, int8 everything else.

An embedding lookup reads a few rows of a large table, so the table is what is worth shrinking,
and each row deserves its own scale (a rare token's row may have a tiny range). The linear
layers after it want the usual int8 recipe. No single backend quantizer does both, so
``ComposableQuantizer`` runs them in order, each claiming the nodes the earlier ones left::

    ComposableQuantizer([EmbeddingQuantizer(), XNNPACKQuantizer().set_global(...)])

    weight (uint8) - dequantize_per_channel - embedding - mean - q/dq int8 - linear - ...

Order is the contract: the embedding quantizer goes first, so XNNPACK's rules never see the
tables (and its "int8 only" check is not applied to the uint8 tables it did not write).
The script prints, for every embedding and linear, the dtype and op of each quantized input,
then the SQNR of the quantized model against the float one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule, Node

from pt2e_quant import convert_pt2e, prepare_pt2e
from pt2e_quant.graph.aten_args import argument
from pt2e_quant.ops.qdq_ops import is_dequantize
from quantizers import (
    ComposableQuantizer,
    EmbeddingQuantizer,
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

aten = torch.ops.aten


class BagOfWordsClassifier(nn.Module):
    """token ids -> embedding -> mean over the sequence -> linear -> relu -> linear."""

    def __init__(self, vocabulary: int = 200, width: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).mean(dim=1)
        return self.out(torch.relu(self.hidden(x)))


#: the positional arguments of the ops we report on, by name
ROLES = {
    aten.embedding.default: ("weight", "indices"),
    aten.linear.default: ("input", "weight", "bias"),
}


def describe_dequantize(dq: Node) -> str:
    """``uint8 per-channel axis 0 (dequantize_per_channel)``: how a value was quantized."""
    dtype = str(argument(dq, "dtype")).removeprefix("torch.")
    op = dq.target.__name__.split(".")[0]
    granularity = f"per-channel axis {argument(dq, 'axis')}" if "channel" in op else "per-tensor"
    return f"{dtype} {granularity} ({op})"


def describe_inputs(model: GraphModule) -> list[str]:
    """One line per embedding / linear: how each of its inputs is quantized, or "float".

    Read from the converted graph itself (the dequantize feeding each argument), so the lines
    show what will really run rather than what the quantizers meant to do.
    """
    lines = []
    for node in model.graph.nodes:
        if node.target not in ROLES:
            continue
        parts = [
            f"{role} {describe_dequantize(arg)}"
            for role, arg in zip(ROLES[node.target], node.args, strict=False)  # bias may be absent
            if is_dequantize(arg)
        ]
        op = node.target.__name__.split(".")[0]
        lines.append(f"{node.name} ({op}): " + ("; ".join(parts) or "float"))
    return lines


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|ref| / |ref - actual|)."""
    noise = (reference - actual).norm()
    return float(20 * torch.log10(reference.norm() / noise)) if noise > 0 else float("inf")


def main() -> float:
    torch.manual_seed(0)
    model = BagOfWordsClassifier().eval()
    calibration = [torch.randint(0, 200, (8, 12)) for _ in range(8)]

    quantizer = ComposableQuantizer(
        [
            EmbeddingQuantizer(),
            XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True)),
        ]
    )
    exported = torch.export.export(model, (calibration[0],)).module()
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in calibration:
            prepared(batch)
    quantized = convert_pt2e(prepared)

    for line in describe_inputs(quantized):
        print(line)
    test_tokens = torch.randint(0, 200, (8, 12))
    with torch.no_grad():
        sqnr = sqnr_db(model(test_tokens), quantized(test_tokens))
    print(f"SQNR float vs quantized: {sqnr:.1f} dB")
    return sqnr


if __name__ == "__main__":
    main()
