"""Tokenised texts as datasets, with dynamic padding: what the text DataModules batch.

Texts are tokenised once in ``setup`` (:func:`tokenize_texts`) and kept unpadded; a batch is padded
to its own longest text (:class:`PadCollate`), and length-grouped batches
(:class:`~datamodules.samplers.LengthGroupedBatchSampler`) keep that padding small.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset


def tokenize_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    keep_end: bool = False,
    chunk: int = 4096,
) -> list[list[int]]:
    """Token ids of ``texts`` (unpadded), each cut to ``max_length`` tokens: its end cut off, or its
    start with ``keep_end``."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        batch, mask = tokenizer.encode(list(texts[start : start + chunk]), max_length, keep_end)
        ids += [row[m].tolist() for row, m in zip(batch, mask)]
    return ids


class TokenizedTexts(Dataset):
    """Token id lists (unpadded), labels and optional per-sample loss weights; padding happens per
    batch in :class:`PadCollate`."""

    def __init__(
        self, ids: Sequence[Sequence[int]], labels: Sequence[int], weights: Sequence[float] | None = None
    ):
        self.ids = [list(map(int, row)) for row in ids]
        self.labels = list(labels)
        self.weights = list(weights) if weights is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"ids": self.ids[i], "label": self.labels[i], "index": i}
        if self.weights is not None:
            item["weight"] = self.weights[i]
        return item


class PadCollate:
    """Dynamic padding: a batch is padded to its own longest text (``pad_id``), not a global length."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(it["ids"]) for it in items)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, it in enumerate(items):
            ids[row, : len(it["ids"])] = torch.as_tensor(it["ids"])
            mask[row, : len(it["ids"])] = True
        batch = {
            "ids": ids,
            "mask": mask,
            "labels": torch.as_tensor([it["label"] for it in items]),
            "index": torch.as_tensor([it["index"] for it in items]),
        }
        if "weight" in items[0]:
            batch["weight"] = torch.as_tensor([it["weight"] for it in items], dtype=torch.float32)
        return batch


class ImageCaptionCollate(PadCollate):
    """:class:`PadCollate` for items that also carry an ``image`` tensor."""

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**super().__call__(items), "image": torch.stack([it["image"] for it in items])}
