"""ImageNet-Captions reader, class descriptions, the relevance training set and its DataModule.

The release (Fang et al. 2022, ``mlfoundations/imagenet-captions``) is one JSON list; every entry is::

    {"filename": "n01440764_10026.JPEG", "wnid": "n01440764", "title": str, "description": str,
     "tags": [str, ...]}

with the image under ``<images>/<wnid>/<filename>`` (ImageNet's train layout). Class names come from
ImageNet's ``LOC_synset_mapping.txt`` (``<wnid> <name>, <synonym>, ...`` per line).

Class descriptions are the user's file (seed 000: Wikipedia's summary, plus the Description section for
animal species and breeds). Format: one JSON object, wnid -> either a text (split into sentences here,
without downloads: :func:`split_sentences`) or a list of sentences::

    {"n02509815": "The red panda is a small mammal native to the eastern Himalayas. It has ...",
     "n01443537": ["The goldfish is a freshwater fish.", "It is commonly kept as a pet."]}

The relevance training set (:func:`write_relevance_dataset`, ``python -m experiments.build_relevance_dataset``)
keeps captions whose title or description has more than one word, splits them per class into train/test
(:func:`split_per_class`) and pairs every caption with each of its class's 2-10 (longest) description
sentences (the Cartesian product), written as JSON lines: a header line, then one item per line.
Every format problem raises :class:`~datamodules.errors.DatasetFormatError` naming the file and the
entry or field. An entry repeating an earlier ``filename`` is dropped (counted and logged; a warning
when its caption differs), and a split left empty is an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.base import SuiteDataModule
from datamodules.errors import (
    DatasetFormatError,
    DuplicateRows,
    decode_utf8,
    json_field,
    read_json,
    read_json_header,
    read_jsonl,
    read_lines,
    require_rows,
)
from datamodules.samplers import EpochFractionSampler, EvalSampler

log = logging.getLogger(__name__)

CAPTION_FIELDS = {"filename": str, "wnid": str, "title": str, "description": str, "tags": list}
WNID = re.compile(r"n\d{8}")
DATASET_FORMAT = "relevance-dataset"
DATASET_VERSION = 1
ITEMS_FILE = "relevance_items.jsonl"
COUNTS_FILE = "relevance_counts.json"


@dataclass(frozen=True)
class Caption:
    """One entry of the release; ``index`` is its position in the JSON list."""

    index: int
    filename: str
    wnid: str
    title: str
    description: str
    tags: tuple[str, ...]

    def text(self, with_tags: bool = False) -> str:
        """Title and description joined into one text field (optionally the tags too)."""
        parts = [self.title, self.description, *(self.tags if with_tags else ())]
        return " ".join(p.strip() for p in parts if p and p.strip())

    def has_words(self, more_than: int = 1) -> bool:
        """The seed's filter: title or description has more than ``more_than`` words."""
        return max(len(self.title.split()), len(self.description.split())) > more_than


def _check_wnid(wnid: str, path: Path, where: str, field: str | None = None) -> None:
    if not WNID.fullmatch(wnid):
        raise DatasetFormatError(path, f"{where}: {wnid!r} is not a WordNet id like 'n01440764'", field=field)


def read_imagenet_captions(path: str | Path, known_wnids: Sequence[str] | None = None) -> list[Caption]:
    """Parse the release's JSON list; with ``known_wnids`` an entry of another class is an error. An
    entry repeating an earlier ``filename`` is dropped and counted (the first one is kept)."""
    path = Path(path)
    data = read_json(path, "a JSON list of {filename, wnid, title, description, tags} objects")
    if not isinstance(data, list):
        raise DatasetFormatError(path, f"expected a JSON list of entries, found {type(data).__name__}")
    known = set(known_wnids) if known_wnids is not None else None
    captions = []
    repeats = DuplicateRows(path, unit="entry")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise DatasetFormatError(path, f"entry {i}: expected an object, found {type(entry).__name__}")
        for name, kind in CAPTION_FIELDS.items():
            json_field(entry, name, kind, path, where=f"entry {i}: ")
        wnid, filename = entry["wnid"], entry["filename"]
        _check_wnid(wnid, path, f"entry {i}", "wnid")
        if known is not None and wnid not in known:
            raise DatasetFormatError(
                path, f"entry {i}: unknown wnid {wnid!r} (no class description)", field="wnid"
            )
        if not filename.startswith(f"{wnid}_") or "/" in filename or "\\" in filename:
            raise DatasetFormatError(
                path,
                f"entry {i}: {filename!r} is not an image of class {wnid} "
                f"(expected '{wnid}_<n>.JPEG', read from <images>/{wnid}/)",
                field="filename",
            )
        bad = next((j for j, tag in enumerate(entry["tags"]) if not isinstance(tag, str)), None)
        if bad is not None:
            raise DatasetFormatError(
                path,
                f"entry {i}: tag {bad} is {type(entry['tags'][bad]).__name__} "
                f"{entry['tags'][bad]!r}, expected str",
                field="tags",
            )
        caption = Caption(i, filename, wnid, entry["title"], entry["description"], tuple(entry["tags"]))
        if repeats.is_new(filename, (wnid, caption.title, caption.description, caption.tags), i):
            captions.append(caption)
    repeats.log(log)
    return captions


def read_synset_mapping(path: str | Path) -> dict[str, list[str]]:
    """Parse ``LOC_synset_mapping.txt``: ``<wnid> <name>, <synonym>, ...`` per line -> wnid -> names."""
    path = Path(path)
    mapping: dict[str, list[str]] = {}
    for number, raw in enumerate(read_lines(path, "'<wnid> <name>, <synonym>, ...' per line"), start=1):
        line = decode_utf8(raw, path, number).strip()
        wnid, _, names = line.partition(" ")
        if not WNID.fullmatch(wnid) or not names.strip():
            raise DatasetFormatError(path, f"expected '<wnid> <names>', found {line!r}", line=number)
        if wnid in mapping:
            raise DatasetFormatError(path, f"duplicate wnid {wnid}", line=number)
        mapping[wnid] = [n.strip() for n in names.split(",") if n.strip()]
    return mapping


# A full stop ends a sentence unless it ends a common abbreviation, an initial or a number's part.
_ABBREVIATIONS = {
    "e.g",
    "i.e",
    "etc",
    "approx",
    "ca",
    "cf",
    "vs",
    "mr",
    "mrs",
    "dr",
    "st",
    "no",
    "sp",
    "spp",
    "var",
}
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of an English text, by rule (no model download): a boundary is ``.``, ``!`` or ``?``
    followed by blanks and a capital or digit, except after an abbreviation (``e.g.``, ``St.``) or a
    one-letter initial (``A. fulgens``)."""
    sentences, start = [], 0
    text = " ".join(text.split())
    for match in _BOUNDARY.finditer(text):
        head = text[start : match.start()]
        last_word = head.rsplit(" ", 1)[-1].rstrip(".!?\"')]").lower()
        if last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha()):
            continue
        sentences.append(head.strip())
        start = match.end()
    tail = text[start:].strip()
    return [s for s in [*sentences, tail] if s]


def read_class_descriptions(path: str | Path, min_sentences: int = 2) -> dict[str, list[str]]:
    """Parse the class-description file (see the module docstring): wnid -> sentences, in file order."""
    path = Path(path)
    data = read_json(path, "a JSON object wnid -> description text or list of sentences")
    if not isinstance(data, dict):
        raise DatasetFormatError(
            path, f"expected a JSON object wnid -> description, found {type(data).__name__}"
        )
    if not data:
        raise DatasetFormatError(path, "no class descriptions (empty object)")
    descriptions = {}
    for wnid, value in data.items():
        _check_wnid(wnid, path, "key", wnid)
        if isinstance(value, str):
            sentences = split_sentences(value)
        elif isinstance(value, list) and all(isinstance(s, str) for s in value):
            sentences = [" ".join(s.split()) for s in value if s.strip()]
        else:
            raise DatasetFormatError(path, "expected a text or a list of sentences", field=wnid)
        if len(sentences) < min_sentences:
            raise DatasetFormatError(
                path, f"{len(sentences)} sentence(s); every class needs at least {min_sentences}", field=wnid
            )
        descriptions[wnid] = sentences
    return descriptions


def select_sentences(sentences: Sequence[str], max_sentences: int = 10) -> list[str]:
    """At most ``max_sentences`` sentences: the longest (in characters) when there are more, kept in
    text order."""
    if len(sentences) <= max_sentences:
        return list(sentences)
    longest = sorted(range(len(sentences)), key=lambda i: (-len(sentences[i]), i))[:max_sentences]
    return [sentences[i] for i in sorted(longest)]


def num_test_captions(
    n: int, test_fraction: float, small_class: int = 100, min_test_share: float = 0.2
) -> int:
    """Test captions of a class of ``n``: ``round(test_fraction * n)``; a class of at most ``small_class``
    captions keeps at least half in train and puts at least ``min_test_share`` in test (train wins
    when both cannot hold: a class of one caption trains on it)."""
    n_test = round(test_fraction * n)
    if n <= small_class:
        n_test = min(max(n_test, math.ceil(min_test_share * n)), n // 2)
    return n_test


def split_per_class(
    labels: Sequence[str],
    test_fraction: float = 0.23,
    seed: int = 0,
    small_class: int = 100,
    min_test_share: float = 0.2,
) -> np.ndarray:
    """A seeded random train/test split, drawn per class (:func:`num_test_captions`): bool ``is_test [n]``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for wnid in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == wnid)
        n_test = num_test_captions(len(members), test_fraction, small_class, min_test_share)
        is_test[rng.permutation(members)[:n_test]] = True
    return is_test


def write_relevance_dataset(
    captions_file: str | Path,
    descriptions_file: str | Path,
    out_dir: str | Path,
    *,
    synset_mapping: str | Path | None = None,
    min_words: int = 1,
    with_tags: bool = False,
    test_fraction: float = 0.23,
    small_class: int = 100,
    min_test_share: float = 0.2,
    min_sentences: int = 2,
    max_sentences: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the relevance training set into ``out_dir`` (:data:`ITEMS_FILE` + :data:`COUNTS_FILE`).

    Classes are the wnids of the description file (label = position in sorted order). Each item is
    ``caption + " " + sentence`` for every kept caption and every selected sentence of its class.
    The items file streams (JSON lines) and is written to a temporary sibling and renamed into place.
    Returns the counts.
    """
    out_dir = Path(out_dir)
    descriptions = read_class_descriptions(descriptions_file, min_sentences)
    wnids = sorted(descriptions)
    names = read_synset_mapping(synset_mapping) if synset_mapping else {}
    captions = read_imagenet_captions(captions_file, known_wnids=wnids)
    kept = [c for c in captions if c.has_words(min_words)]
    is_test = split_per_class([c.wnid for c in kept], test_fraction, seed, small_class, min_test_share)
    for split, members in (("train", ~is_test), ("test", is_test)):
        require_rows(
            np.flatnonzero(members),
            split,
            captions_file,
            dropped={f"captions of {min_words} word(s) or less": len(captions) - len(kept)},
        )
    sentences = {w: select_sentences(descriptions[w], max_sentences) for w in wnids}
    label = {w: i for i, w in enumerate(wnids)}
    counts: dict[str, Any] = {
        "captions": len(captions),
        "kept_more_than_one_word": len(kept),
        "dropped_short": len(captions) - len(kept),
        "classes": len(wnids),
        "captions_train": int((~is_test).sum()),
        "captions_test": int(is_test.sum()),
        "items_train": 0,
        "items_test": 0,
    }
    settings = {
        "min_words": min_words,
        "with_tags": with_tags,
        "test_fraction": test_fraction,
        "small_class": small_class,
        "min_test_share": min_test_share,
        "min_sentences": min_sentences,
        "max_sentences": max_sentences,
        "seed": seed,
    }
    header = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "settings": settings,
        "classes": wnids,
        "class_names": [(names.get(w) or [w])[0] for w in wnids],
        "with_tags": with_tags,
        "sources": {
            "captions": str(Path(captions_file).resolve()),
            "descriptions": str(Path(descriptions_file).resolve()),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    items_path = out_dir / ITEMS_FILE
    tmp = items_path.with_name(f".{ITEMS_FILE}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("x", encoding="utf-8", newline="\n") as out:
            out.write(json.dumps(header) + "\n")
            for caption, test in zip(kept, is_test):
                split = "test" if test else "train"
                text = caption.text(with_tags)
                for j, sentence in enumerate(sentences[caption.wnid]):
                    out.write(
                        json.dumps(
                            {
                                "split": split,
                                "label": label[caption.wnid],
                                "caption": caption.index,
                                "sentence": j,
                                "text": f"{text} {sentence}",
                            }
                        )
                        + "\n"
                    )
                counts[f"items_{split}"] += len(sentences[caption.wnid])
        os.replace(tmp, items_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    per_class = Counter(c.wnid for c in kept)
    counts["per_class"] = {w: {"captions": per_class[w], "sentences": len(sentences[w])} for w in wnids}
    (out_dir / COUNTS_FILE).write_text(json.dumps(counts, indent=2))
    log.info(
        "relevance dataset %s: %d captions kept of %d, %d train / %d test items",
        items_path,
        len(kept),
        len(captions),
        counts["items_train"],
        counts["items_test"],
    )
    return counts


def read_relevance_dataset(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The header and the items per split (``train``/``test``) of a built relevance dataset."""
    path = Path(out_dir) / ITEMS_FILE
    lines = read_jsonl(path, "a relevance dataset (python -m experiments.build_relevance_dataset)")
    header = lines[0][1] if lines else {}
    if header.get("format") != DATASET_FORMAT or header.get("version") != DATASET_VERSION:
        raise DatasetFormatError(path, f"not a {DATASET_FORMAT} v{DATASET_VERSION} file; rebuild it", line=1)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    for number, item in lines[1:]:
        split = json_field(item, "split", str, path, number)
        if split not in splits:
            raise DatasetFormatError(path, f"unknown split {split!r}", line=number, field="split")
        json_field(item, "text", str, path, number)
        json_field(item, "label", int, path, number)
        splits[split].append(item)
    for split, items in splits.items():
        require_rows(items, split, path)
    return header, splits


# --------------------------------------------------------------------------------------------
# Tokenised texts, dynamic padding, length-grouped batches
# --------------------------------------------------------------------------------------------


class TokenizedTexts(Dataset):
    """Token id lists (unpadded), labels and optional per-sample loss weights; padding happens per
    batch in :func:`pad_collate`."""

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


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length from any index sampler.

    The sampler's indices (this epoch's fresh share, this rank's part) are cut into pools of
    ``pool_batches * batch_size``; each pool is sorted by length and cut into batches, and with
    ``shuffle`` the batches are shuffled, so a batch holds texts of similar length (little padding)
    while the epoch's order stays random. ``set_epoch`` reaches the wrapped sampler.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        lengths: Sequence[int],
        batch_size: int,
        pool_batches: int = 50,
        shuffle: bool = True,
    ) -> None:
        self.sampler, self.lengths = sampler, list(lengths)
        self.batch_size, self.pool_batches, self.shuffle = batch_size, pool_batches, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(indices), pool):
            chunk = sorted(indices[start : start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            g = torch.Generator().manual_seed(1_000_003 * self.epoch + getattr(self.sampler, "seed", 0))
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return iter(batches)


class RelevanceDataModule(SuiteDataModule):
    """Caption + class-sentence items for the relevance classifier (seed 000).

    ``prepare_data`` writes the synthetic twin when ``synthetic`` is set and builds the relevance
    dataset (:func:`write_relevance_dataset`) into ``dataset_dir`` when it is missing or was built from
    other files. ``setup`` reads it, builds the tokenizer of ``text_encoder`` (the offline
    ``roberta_small`` trains a byte-level BPE on the training texts) and tokenises every item once.

    Evaluation: the seed has no validation set; it evaluates the test set after every epoch to watch
    over-fitting. Here the validation loader *is* the test set (``val/top1`` is the seed's per-epoch
    test curve); the final ``test/`` scores are on the same items, so they are not a held-out estimate
    of a model selected on them: the seed's protocol, and the filter uses the last model anyway.

    Args:
        root: the release folder (``captions_file``, ``descriptions_file``, ``synset_mapping`` inside).
        dataset_dir: where the built dataset lives (default ``<root>/relevance_dataset``).
        build: keyword arguments of :func:`write_relevance_dataset` (split, sentence counts, seed).
        text_encoder, text_vocab_size, text_min_freq, text_max_length: the tokenizer.
        batch_size, num_workers, pin_memory, epoch_fraction, split_seed: see :class:`SuiteDataModule`.
        pool_batches: batches per length-sorted pool (:class:`LengthGroupedBatchSampler`).
        synthetic: ``None`` for real data, else the arguments of ``ensure_imagenet_captions``.
    """

    def __init__(
        self,
        root: str,
        captions_file: str = "imagenet_captions.json",
        descriptions_file: str = "class_descriptions.json",
        synset_mapping: str | None = "LOC_synset_mapping.txt",
        dataset_dir: str | None = None,
        build: dict[str, Any] | None = None,
        text_encoder: str = "roberta_small",
        text_vocab_size: int = 2000,
        text_min_freq: int = 2,
        text_max_length: int = 64,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        epoch_fraction: float = 0.75,
        split_seed: int = 0,
        pool_batches: int = 50,
        synthetic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # plain values only in checkpoints (they load with weights_only=True)
        build = {str(k): v for k, v in dict(build or {}).items()}
        synthetic = {str(k): v for k, v in dict(synthetic).items()} if synthetic is not None else None
        self.save_hyperparameters(logger=False, ignore=["transforms", "kwargs"])
        self.root = Path(root)
        self.dataset_dir = Path(dataset_dir) if dataset_dir else self.root / "relevance_dataset"
        self.tokenizer = None
        self.header: dict[str, Any] = {}

    def source(self, name: str) -> Path | None:
        value = self.hparams[name]
        return None if not value else (self.root / value)

    def prepare_data(self) -> None:
        if self.hparams.synthetic:
            from datamodules.synthetic.imagenet_captions import ensure_imagenet_captions

            ensure_imagenet_captions(self.root, **self.hparams.synthetic)
        if not self._dataset_is_current():
            mapping = self.source("synset_mapping")
            write_relevance_dataset(
                self.source("captions_file"),
                self.source("descriptions_file"),
                self.dataset_dir,
                synset_mapping=mapping if mapping and mapping.is_file() else None,
                **self.hparams.build,
            )

    def _dataset_is_current(self) -> bool:
        path = self.dataset_dir / ITEMS_FILE
        if not path.is_file():
            return False
        header = read_json_header(path)  # a broken one raises, naming the file and line 1
        built_from = header.get("sources", {})
        if not all(self.source(n).is_file() for n in ("captions_file", "descriptions_file")):
            return False  # rebuilding reports the missing file
        newest_source = max(self.source(n).stat().st_mtime for n in ("captions_file", "descriptions_file"))
        same_settings = all(header.get("settings", {}).get(k) == v for k, v in self.hparams.build.items())
        return (
            built_from.get("captions") == str(self.source("captions_file").resolve())
            and same_settings
            and path.stat().st_mtime >= newest_source
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        from lit_modules.text_encoders import build_tokenizer

        hp = self.hparams
        self.header, splits = read_relevance_dataset(self.dataset_dir)
        self.tokenizer = build_tokenizer(
            hp.text_encoder,
            (it["text"] for it in splits["train"]),
            vocab_size=hp.text_vocab_size,
            min_freq=hp.text_min_freq,
        )
        # Items are "caption + class sentence": a text over the token budget loses the start of its
        # caption, never the class sentence at its end.
        self.data_train, self.data_test = (
            self.tokenize([it["text"] for it in splits[s]], [it["label"] for it in splits[s]], keep_end=True)
            for s in ("train", "test")
        )
        self.data_val = self.data_test  # the seed's per-epoch test evaluation (see the class docstring)
        log.info(
            "relevance dataset: %d train / %d test items, %d classes, tokenizer of %d tokens",
            len(self.data_train),
            len(self.data_test),
            len(self.label_names),
            len(self.tokenizer),
        )

    def tokenize(
        self,
        texts: Sequence[str],
        labels: Sequence[int],
        weights: Sequence[float] | None = None,
        chunk: int = 4096,
        keep_end: bool = False,
    ) -> TokenizedTexts:
        """Token ids of ``texts`` (truncated to ``text_max_length``: the end cut, or the start with
        ``keep_end``; unpadded) as a dataset."""
        ids: list[list[int]] = []
        for start in range(0, len(texts), chunk):
            batch, mask = self.tokenizer.encode(
                list(texts[start : start + chunk]), self.hparams.text_max_length, keep_end
            )
            ids += [row[m].tolist() for row, m in zip(batch, mask)]
        return TokenizedTexts(ids, labels, weights)

    def collate(self) -> PadCollate:
        return PadCollate(self.pad_id)

    @property
    def pad_id(self) -> int:
        return getattr(self.tokenizer, "pad_id", 0)

    def _text_loader(
        self, dataset: TokenizedTexts, sampler: EpochFractionSampler | EvalSampler, shuffle: bool
    ) -> DataLoader:
        batches = LengthGroupedBatchSampler(
            sampler, dataset.lengths, self.hparams.batch_size, self.hparams.pool_batches, shuffle=shuffle
        )
        workers, pin = self.hparams.num_workers, self.hparams.pin_memory
        if pin == "auto":  # as SuiteDataModule: pin when training on a GPU
            pin = self.trainer is not None and type(self.trainer.accelerator).__name__ == "CUDAAccelerator"
        return DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=self.collate(),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=bool(pin),
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._replicas()
        sampler = EpochFractionSampler(
            len(self.data_train),
            self.hparams.epoch_fraction,
            shuffle=True,
            seed=self.hparams.split_seed,
            num_replicas=world,
            rank=rank,
        )
        return self._text_loader(self.data_train, sampler, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._text_loader(
            self.data_val, EvalSampler(len(self.data_val), *self._replicas()), shuffle=False
        )

    def test_dataloader(self) -> DataLoader:
        return self._text_loader(
            self.data_test, EvalSampler(len(self.data_test), *self._replicas()), shuffle=False
        )

    @property
    def label_names(self) -> list[str]:
        return list(self.header.get("classes", []))

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "imagenet_captions",
            "label_names": self.label_names,
            "class_names": list(self.header.get("class_names", [])),
            "with_tags": self.header.get("with_tags", False),
            "text": {
                **(self.tokenizer.state() if self.tokenizer else {}),
                "max_length": self.hparams.text_max_length,
            },
        }


# --------------------------------------------------------------------------------------------
# Using the coefficients: images + captions with per-sample loss weights
# --------------------------------------------------------------------------------------------

WEIGHTING_MODES = ("unweighted", "weighted", "drop")


class CaptionedImages(Dataset):
    """Image (``<image_root>/<wnid>/<filename>``), caption token ids, label and loss weight per item."""

    def __init__(
        self, image_root: Path, captions: Sequence[Caption], texts: TokenizedTexts, transform=None
    ) -> None:
        from datamodules.base import DecodedImages

        self.image_root, self.captions, self.texts, self.transform = (
            Path(image_root),
            list(captions),
            texts,
            transform,
        )
        self.images = DecodedImages(len(self.captions), cache=True)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        caption = self.captions[i]
        image = self.images.load(i, self.image_root / caption.wnid / caption.filename)
        return {**self.texts[i], "image": self.transform(image) if self.transform else image}

    @property
    def lengths(self) -> list[int]:
        return self.texts.lengths


class ImageCaptionCollate(PadCollate):
    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**super().__call__(items), "image": torch.stack([it["image"] for it in items])}


class CaptionedImagesDataModule(RelevanceDataModule):
    """ImageNet-Captions images + captions for a classifier trained with relevance weights.

    The captions are split per class as the relevance dataset (same settings and seed, all captions);
    ``mode`` says what the training split uses from ``relevance_file`` (``kept_captions.jsonl`` of
    ``experiments.score_relevance``): ``unweighted`` every caption with weight 1; ``drop`` only the
    kept captions, weight 1; ``weighted`` only the kept captions, weighted by their coefficient. The
    test split is the same in every mode (every test caption, weight 1), so the three are comparable.
    Caption tokens come from a word vocabulary of the training captions (``text_encoder: bilstm``).
    With ``check_images`` captions whose image is missing are dropped after the split (counted, logged).
    """

    def __init__(
        self,
        root: str,
        transforms=None,
        mode: str = "unweighted",
        relevance_file: str | None = None,
        image_dir: str = "train",
        check_images: bool = True,
        **kwargs: Any,
    ) -> None:
        if mode not in WEIGHTING_MODES:
            raise ValueError(f"mode must be one of {WEIGHTING_MODES}, got {mode!r}")
        if mode != "unweighted" and not relevance_file:
            raise ValueError(
                f"mode {mode!r} needs data.relevance_file "
                "(kept_captions.jsonl of experiments.score_relevance)"
            )
        # Lightning collects the hyperparameters from every __init__ frame: plain values here too
        kwargs = {k: dict(v) if isinstance(v, Mapping) else v for k, v in kwargs.items()}
        super().__init__(root, **kwargs)
        self.hparams.update(
            mode=mode, relevance_file=relevance_file, image_dir=image_dir, check_images=check_images
        )
        from datamodules.transforms import ImageTransforms

        self.transforms = transforms or ImageTransforms()

    def prepare_data(self) -> None:
        if self.hparams.synthetic:
            from datamodules.synthetic.imagenet_captions import ensure_imagenet_captions

            ensure_imagenet_captions(self.root, **self.hparams.synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        from lit_modules.text_encoders import build_tokenizer

        hp, build = self.hparams, self.hparams.build
        wnids = sorted(
            read_class_descriptions(self.source("descriptions_file"), build.get("min_sentences", 2))
        )
        mapping = self.source("synset_mapping")
        names = read_synset_mapping(mapping) if mapping and mapping.is_file() else {}
        self.header = {"classes": wnids, "class_names": [(names.get(w) or [w])[0] for w in wnids]}
        captions = read_imagenet_captions(self.source("captions_file"), known_wnids=wnids)
        is_test = split_per_class(
            [c.wnid for c in captions],
            build.get("test_fraction", 0.23),
            build.get("seed", 0),
            build.get("small_class", 100),
            build.get("min_test_share", 0.2),
        )
        train = [c for c, t in zip(captions, is_test) if not t]
        test = [c for c, t in zip(captions, is_test) if t]
        image_root = self.root / hp.image_dir
        sources, dropped = [self.source("captions_file")], {"train": {}, "test": {}}
        if hp.mode != "unweighted":
            coef = self._read_coefficients(Path(hp.relevance_file), {c.index: c for c in captions})
            dropped["train"]["not kept by the relevance filter"] = sum(c.index not in coef for c in train)
            train = [c for c in train if c.index in coef]
            sources.append(Path(hp.relevance_file))
        if hp.check_images:
            missing = {
                c.index: f"{c.wnid}/{c.filename}"
                for c in train + test
                if not (image_root / c.wnid / c.filename).is_file()
            }
            if missing:
                log.warning(
                    "captioned images: dropped %d caption(s) whose image is missing under %s, e.g. %s",
                    len(missing),
                    image_root,
                    ", ".join(list(missing.values())[:5]),
                )
            for name, part in (("train", train), ("test", test)):
                dropped[name]["images missing on disk"] = sum(c.index in missing for c in part)
            train, test = (
                [c for c in train if c.index not in missing],
                [c for c in test if c.index not in missing],
            )
        require_rows(train, "train", *sources, dropped=dropped["train"])
        require_rows(test, "test", sources[0], dropped=dropped["test"])
        weights = [coef[c.index] for c in train] if hp.mode == "weighted" else [1.0] * len(train)
        texts = [c.text(build.get("with_tags", False)) for c in train]
        self.tokenizer = build_tokenizer(
            hp.text_encoder, texts, vocab_size=hp.text_vocab_size, min_freq=hp.text_min_freq
        )
        label = {w: i for i, w in enumerate(wnids)}

        def make(items: list[Caption], item_weights: list[float], transform) -> CaptionedImages:
            tokens = self.tokenize(
                [c.text(build.get("with_tags", False)) for c in items],
                [label[c.wnid] for c in items],
                item_weights,
            )
            return CaptionedImages(image_root, items, tokens, transform)

        self.data_train = make(train, weights, self.transforms.train())
        self.data_test = make(test, [1.0] * len(test), self.transforms.eval())
        self.data_val = self.data_test  # as the relevance classifier: the test split every epoch
        log.info(
            "captioned images (%s): %d train (weight sum %.1f) / %d test",
            hp.mode,
            len(train),
            sum(weights),
            len(test),
        )

    @staticmethod
    def _read_coefficients(path: Path, captions: Mapping[int, Caption]) -> dict[int, float]:
        """``{caption index: coefficient}`` of ``kept_captions.jsonl``; every line must name a caption
        of the release (by ``index``, and by ``filename`` where given) and carry a number ``coef``."""
        coef = {}
        for number, row in read_jsonl(
            path,
            "one {index, filename, coef, ...} object per kept caption "
            "(python -m experiments.score_relevance)",
        ):
            index = json_field(row, "index", int, path, number)
            value = json_field(row, "coef", (int, float), path, number)
            caption = captions.get(index)
            if caption is None or row.get("filename", caption.filename) != caption.filename:
                raise DatasetFormatError(
                    path,
                    f"caption {index} ({row.get('filename')}) is not in the captions "
                    "file; rescore it with this release",
                    line=number,
                    field="index",
                )
            coef[index] = float(value)
        return coef

    def collate(self) -> ImageCaptionCollate:
        return ImageCaptionCollate(self.pad_id)

    def export_metadata(self) -> dict[str, Any]:
        return {**super().export_metadata(), "transforms": self.transforms.describe()}
