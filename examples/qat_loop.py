"""Quantization-aware training: train with int8 rounding in the loop, then convert to int8.

    export (train mode) -> prepare_qat_pt2e (fake-quantize modules) -> train
      -> freeze observers -> move_exported_model_to_eval -> convert_pt2e (q/dq ops)

Post-training quantization rounds a model that never saw rounding; QAT lets the weights adapt
to it. ``prepare_qat_pt2e`` inserts fake-quantize modules that round in the forward pass and
let gradients through in the backward pass, and keeps conv -> batch norm trainable (the
statistics still update; convert folds them into the int8 conv). The exported model is a
GraphModule, so ``model.eval()`` does not reach its batch norm and dropout:
``move_exported_model_to_eval`` switches them by rewriting the graph.

The task is synthetic so the script needs no data set: say which of the three colour channels
of a small image is brightest on average. The script prints the loss falling during training,
the loss and accuracy of the QAT model (fake-quantized, eval mode) and of the converted int8
model, and the SQNR between their outputs: convert must give what training measured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pt2e_quant import convert_pt2e, move_exported_model_to_eval, prepare_qat_pt2e
from pt2e_quant.fake_quantize import disable_observer
from quantizers import XNNPACKQuantizer, get_symmetric_quantization_config

STEPS = 40
BATCH = 32


class ConvBnReluClassifier(nn.Module):
    """conv -> batch norm -> relu -> global average pool -> linear (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return self.head(x.mean((2, 3)))


def make_batch(size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one channel brightened at random; the label is the brightest channel."""
    images = torch.randn(size, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (size,), generator=generator)
    images[torch.arange(size), labels] += 0.5
    return images, labels


def predict(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Logits for every held-out batch, concatenated.

    Batch by batch: the export specialised the graph to the example's batch size.
    """
    with torch.no_grad():
        return torch.cat([model(images) for images, _ in batches])


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return F.cross_entropy(logits, labels).item(), (
        logits.argmax(1) == labels
    ).float().mean().item()


def sqnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20 log10(|ref| / |ref - actual|)."""
    noise = (reference - actual).norm()
    return float(20 * torch.log10(reference.norm() / noise)) if noise > 0 else float("inf")


def main() -> dict[str, float]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = ConvBnReluClassifier().train()
    example = make_batch(BATCH, generator)[0]

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    )
    prepared = prepare_qat_pt2e(torch.export.export(model, (example,)).module(), quantizer)

    optimizer = torch.optim.Adam(prepared.parameters(), lr=0.02)
    losses = []
    for step in range(STEPS):
        images, labels = make_batch(BATCH, generator)
        loss = F.cross_entropy(prepared(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == STEPS - 1:
            print(f"step {step:2d}: loss {loss.item():.3f}")
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"training loss: {first:.3f} -> {last:.3f} (mean of first / last 5 steps)")

    # Freeze the learned ranges: fake-quantize modules keep observing in eval mode, so the
    # held-out batches below would otherwise move the qparams that convert then bakes in,
    # and the int8 model would no longer be the one that was evaluated.
    prepared.apply(disable_observer)
    move_exported_model_to_eval(prepared)
    held_out = [make_batch(BATCH, generator) for _ in range(16)]
    labels = torch.cat([batch_labels for _, batch_labels in held_out])
    qat_logits = predict(prepared, held_out)
    converted = convert_pt2e(prepared)
    int8_logits = predict(converted, held_out)
    qat_loss, qat_accuracy = loss_and_accuracy(qat_logits, labels)
    int8_loss, int8_accuracy = loss_and_accuracy(int8_logits, labels)
    sqnr = sqnr_db(qat_logits, int8_logits)

    print(f"QAT eval:  loss {qat_loss:.3f}, accuracy {qat_accuracy:.1%}")
    print(f"converted: loss {int8_loss:.3f}, accuracy {int8_accuracy:.1%}")
    print(f"SQNR QAT vs converted: {sqnr:.1f} dB")
    return {"first": first, "last": last, "qat": qat_accuracy, "int8": int8_accuracy}


if __name__ == "__main__":
    main()
