"""Tokenised texts as datasets, with dynamic padding: what the text DataModules batch.

Texts are tokenised once, when a dataset is prepared, and kept unpadded in :class:`TokenArrays`
(one flat id array + offsets, saved as ``.npy`` files that every process memory-maps: no per-text
Python objects, nothing copied into DataLoader workers). A batch is padded to its own longest text
(:class:`PadCollate`), and length-grouped batches
(:class:`~datamodules.samplers.LengthGroupedBatchSampler`) keep that padding small.

:class:`JoinedTexts` builds items from two tokenised parts (a caption and a class sentence) when they
are read, so a product of ``n`` captions and ``m`` sentences is stored as ``n + m`` token rows and
one ``(first, second, label)`` index triple per item.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from datamodules.files import atomic_save_npy
from datamodules.samplers import LengthGroupedBatchSampler


class TokenArrays:
    """Token id rows as one flat array and offsets: row ``i`` is ``ids[offsets[i]:offsets[i + 1]]``.

    Saved as ``<name>.ids.npy`` and ``<name>.offsets.npy``; :meth:`load` memory-maps them, and a
    memory-mapped instance pickles as its file paths (a spawned worker maps the files again instead
    of receiving a copy).
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, paths: tuple[str, str] | None = None) -> None:
        if offsets.ndim != 1 or len(offsets) == 0 or int(offsets[-1]) != len(ids):
            raise ValueError(f"offsets must end at the number of ids ({len(ids)}), got {offsets[-1:]}")
        self.ids, self.offsets, self._paths = ids, offsets, paths

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], dtype: Any = np.int32) -> TokenArrays:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((t for r in rows for t in r), dtype=dtype, count=int(offsets[-1]))
        return cls(ids, offsets)

    @staticmethod
    def id_dtype(vocab_size: int) -> Any:
        """The smallest unsigned type that holds every id (uint16 below 65,536 tokens)."""
        return np.uint16 if vocab_size <= 2**16 else np.int32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, folder: Path, name: str) -> None:
        for part, array in (("ids", self.ids), ("offsets", self.offsets)):
            atomic_save_npy(Path(folder) / f"{name}.{part}.npy", np.ascontiguousarray(array))

    @classmethod
    def load(cls, folder: Path, name: str) -> TokenArrays:
        return _load_token_arrays(*(str(Path(folder) / f"{name}.{part}.npy") for part in ("ids", "offsets")))

    def __reduce__(self):
        if self._paths is not None:
            return _load_token_arrays, self._paths
        return TokenArrays, (self.ids, self.offsets)


def _load_token_arrays(ids_path: str, offsets_path: str) -> TokenArrays:
    return TokenArrays(
        np.load(ids_path, mmap_mode="r"), np.load(offsets_path, mmap_mode="r"), (ids_path, offsets_path)
    )


def encode_to_arrays(
    tokenizer: Any, texts: Sequence[str], max_length: int, keep_end: bool = False, chunk: int = 4096
) -> TokenArrays:
    """Token ids of ``texts`` as :meth:`tokenizer.encode` gives them (special tokens included), each
    cut to ``max_length`` tokens: its end cut off, or its start with ``keep_end``; tokenised in
    chunks, so memory stays that of one chunk."""
    dtype = TokenArrays.id_dtype(len(tokenizer))
    parts, lengths = [], []
    for start in range(0, len(texts), chunk):
        batch, mask = tokenizer.encode(list(texts[start : start + chunk]), max_length, keep_end)
        parts.append(batch[mask].numpy().astype(dtype))
        lengths.append(mask.sum(1).numpy())
    return _concatenate(parts, lengths, dtype)


def encode_pieces_to_arrays(
    tokenizer: Any, texts: Sequence[str], keep: int | None = None, keep_end: bool = False, chunk: int = 4096
) -> TokenArrays:
    """:meth:`tokenizer.pieces` of ``texts`` (no special tokens); with ``keep``, each row keeps at most
    ``keep`` ids: its first ones, or its last with ``keep_end``."""
    dtype = TokenArrays.id_dtype(len(tokenizer))
    parts, lengths = [], []
    for start in range(0, len(texts), chunk):
        rows = tokenizer.pieces(list(texts[start : start + chunk]))
        if keep is not None:
            rows = [row[max(0, len(row) - keep) :] if keep_end else row[:keep] for row in rows]
        lengths.append(np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows)))
        parts.append(np.fromiter((t for r in rows for t in r), dtype=dtype, count=int(lengths[-1].sum())))
    return _concatenate(parts, lengths, dtype)


def _concatenate(parts: list[np.ndarray], lengths: list[np.ndarray], dtype: Any) -> TokenArrays:
    offsets = np.zeros(sum(len(n) for n in lengths) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    ids = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)
    return TokenArrays(ids, offsets)


class TokenizedTexts(Dataset):
    """Token id rows (unpadded), labels and optional per-sample loss weights; padding happens per
    batch in :class:`PadCollate`.

    Args:
        ids: a :class:`TokenArrays` or a sequence of id lists.
        labels: one class index per row.
        weights: per-row loss weights (``None``: no ``weight`` in the items).
    """

    def __init__(
        self,
        ids: TokenArrays | Sequence[Sequence[int]],
        labels: Sequence[int] | np.ndarray,
        weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.ids = ids if isinstance(ids, TokenArrays) else TokenArrays.from_rows(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float32) if weights is not None else None
        if len(self.labels) != len(self.ids):
            raise ValueError(f"{len(self.ids)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> list[int]:
        return self.ids.lengths.tolist()

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"ids": self.ids[i].tolist(), "label": int(self.labels[i]), "index": i}
        if self.weights is not None:
            item["weight"] = float(self.weights[i])
        return item


class JoinedTexts(Dataset):
    """Items joined from two tokenised parts when read: ``prefix + first + second + suffix``.

    Each item is a row ``(first row, second row, label)`` of ``items``. The second part (the class
    sentence) is kept whole; over ``max_length`` the first part (the caption) loses its start
    (``truncate="start"``) or its end (``truncate="end"``). A second part longer than the budget on
    its own keeps its end (``start``) or its start (``end``), and the first part is left out.
    With ``truncate="start"`` an item equals the tokenizer's ``encode`` of the joined text with
    ``keep_end`` (the budget's last tokens of ``first + " " + second``).
    """

    def __init__(
        self,
        first: TokenArrays,
        second: TokenArrays,
        items: np.ndarray,
        max_length: int,
        frame: tuple[Sequence[int], Sequence[int]] = ((), ()),
        truncate: str = "start",
    ) -> None:
        if truncate not in TRUNCATE_SIDES:
            raise ValueError(f"truncate must be one of {TRUNCATE_SIDES}, got {truncate!r}")
        self.first, self.second, self.items = first, second, items
        self.prefix, self.suffix = list(frame[0]), list(frame[1])
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget <= 0:
            raise ValueError(f"max_length {max_length} leaves no room inside the special tokens {frame}")
        self.truncate = truncate

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        first = self.first.lengths[self.items[:, 0]]
        second = self.second.lengths[self.items[:, 1]]
        body = np.minimum(first + second, self.budget)
        return (body + len(self.prefix) + len(self.suffix)).tolist()

    def __getitem__(self, i: int) -> dict[str, Any]:
        a, b, label = (int(v) for v in self.items[i])
        first, second = self.first[a], self.second[b]
        room = self.budget - len(second)
        if room <= 0:
            body = second[-self.budget :] if self.truncate == "start" else second[: self.budget]
        elif len(first) <= room:
            body = np.concatenate([first, second])
        else:
            kept = first[len(first) - room :] if self.truncate == "start" else first[:room]
            body = np.concatenate([kept, second])
        return {"ids": self.prefix + body.tolist() + self.suffix, "label": label, "index": i}


#: Which end of a caption over the token budget is cut (``start``: its end is kept).
TRUNCATE_SIDES = ("start", "end")


class PadCollate:
    """Dynamic padding: a batch is padded to its own longest text (``pad_id``), not a global length."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(max(len(it["ids"]) for it in items), 1)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, it in enumerate(items):
            ids[row, : len(it["ids"])] = torch.as_tensor(it["ids"], dtype=torch.long)
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


class LengthGroupedBatches:
    """The batching of a text DataModule (mixed into a :class:`~datamodules.base.SuiteDataModule` that
    has a ``tokenizer`` after ``setup`` and a ``pool_batches`` argument): batches of texts of similar
    length (:class:`~datamodules.samplers.LengthGroupedBatchSampler`, ``pool_batches`` batches per
    length-sorted pool, shuffled for training), each padded by ``collate`` to its own longest text."""

    collate: ClassVar[type[PadCollate]] = PadCollate

    def collate_fn(self, split: str) -> PadCollate:
        return self.collate(self.tokenizer.pad_id)

    def batch_sampler(self, sampler: Sampler[int], dataset: Dataset, split: str) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(
            sampler,
            dataset.lengths,
            self.hparams.batch_size,
            self.hparams.pool_batches,
            shuffle=split == "train",
        )
