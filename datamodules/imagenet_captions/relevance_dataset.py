"""The relevance training set of seed 000, built once from an ImageNet-Captions release.

:func:`write_relevance_dataset` (``python -m experiments.build_relevance_dataset``, or the relevance
DataModule's ``prepare``) keeps captions whose title or description has more than one word, splits
them per class into train/test (:func:`~datamodules.imagenet_captions.reader.split_per_class`) and
pairs every caption with each text chunk of its class (the Cartesian product): the class's 2-10
longest description sentences, ``sentences_per_item`` consecutive ones per chunk (the seed's
Table 1 appends one or two). Nothing is written per item but an index triple::

    <out>/dataset.json           header: format, settings, sources (size, mtime), classes, counts
    <out>/relevance_items.jsonl  one kept caption per line: {index, wnid, split, text} (release
                                 order); its items are this caption x every chunk of its class
    <out>/sentences.jsonl        one class text chunk per line: {wnid, text}
    <out>/item_triples.npy       int32 [items, 3]: (caption line, chunk line, label); train first
    <out>/relevance_counts.json

:func:`write_relevance_tokens` tokenises the captions and chunks once each (and trains the offline
BPE or vocabulary on the training captions and chunks) into ``<out>/tokens_<digest>/``; the
DataModule memory-maps those arrays and joins an item's two parts when it is read
(:class:`~datamodules.text_batches.JoinedTexts`). Every file is written atomically and the header
last, so an interrupted build is rebuilt. A split left empty is an error.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import (
    DatasetFormatError,
    json_field,
    read_json,
    read_json_header,
    read_jsonl,
    require_rows,
)
from datamodules.files import atomic_save_npy, atomic_write_jsonl, atomic_write_text
from datamodules.imagenet_captions.reader import (
    read_class_descriptions,
    read_imagenet_captions,
    read_synset_mapping,
    select_sentences,
    split_per_class,
)
from datamodules.index_state import records_match, settings_digest, source_stamp
from datamodules.preprocessing.text import build_tokenizer, tokenizer_from_state
from datamodules.text_batches import TRUNCATE_SIDES, JoinedTexts, TokenArrays, encode_pieces_to_arrays

log = logging.getLogger(__name__)

DATASET_FORMAT = "relevance-dataset"
DATASET_VERSION = 2
HEADER_FILE = "dataset.json"
ITEMS_FILE = "relevance_items.jsonl"
SENTENCES_FILE = "sentences.jsonl"
TRIPLES_FILE = "item_triples.npy"
COUNTS_FILE = "relevance_counts.json"
TOKENS_FILE = "tokens.json"


def release_stamps(captions_file: str | Path, descriptions_file: str | Path) -> dict[str, Any]:
    """The :func:`~datamodules.index_state.source_stamp` of the two release files a build reads."""
    return {"captions": source_stamp(captions_file), "descriptions": source_stamp(descriptions_file)}


def chunk_sentences(sentences: Sequence[str], per_chunk: int = 1) -> list[str]:
    """Consecutive sentences joined ``per_chunk`` at a time (the last chunk may be shorter)."""
    if per_chunk < 1:
        raise ValueError(f"sentences_per_item must be at least 1, got {per_chunk}")
    return [" ".join(sentences[i : i + per_chunk]) for i in range(0, len(sentences), per_chunk)]


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
    sentences_per_item: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Build the relevance training set into ``out_dir`` (see the module docstring); returns the counts.

    Classes are the wnids that have kept captions (label = position in sorted order); a described
    class without one is left out and counted (the seed's captions span 999 of ImageNet's classes).
    """
    out_dir = Path(out_dir)
    descriptions = read_class_descriptions(descriptions_file, min_sentences)
    names = read_synset_mapping(synset_mapping) if synset_mapping else {}
    captions = read_imagenet_captions(captions_file, known_wnids=list(descriptions))
    kept = [c for c in captions if c.has_words(min_words)]
    wnids = sorted({c.wnid for c in kept})
    is_test = split_per_class([c.wnid for c in kept], test_fraction, seed, small_class, min_test_share)
    for split, members in (("train", ~is_test), ("test", is_test)):
        require_rows(
            np.flatnonzero(members),
            split,
            captions_file,
            dropped={f"captions of {min_words} word(s) or less": len(captions) - len(kept)},
        )
    label = {w: i for i, w in enumerate(wnids)}
    chunks = {
        w: chunk_sentences(select_sentences(descriptions[w], max_sentences), sentences_per_item)
        for w in wnids
    }
    chunk_start = np.cumsum([0] + [len(chunks[w]) for w in wnids])
    chunk_count = np.diff(chunk_start)

    # items: every caption row x every chunk row of its class, train captions first
    caption_label = np.array([label[c.wnid] for c in kept], dtype=np.int64)
    order = np.concatenate([np.flatnonzero(~is_test), np.flatnonzero(is_test)])
    per_caption = chunk_count[caption_label[order]]
    rows = np.repeat(order, per_caption)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(per_caption) - per_caption, per_caption)
    items = np.stack([rows, chunk_start[caption_label[rows]] + within, caption_label[rows]], axis=1)
    n_train = int(per_caption[: int((~is_test).sum())].sum())

    settings = {
        "min_words": min_words,
        "with_tags": with_tags,
        "test_fraction": test_fraction,
        "small_class": small_class,
        "min_test_share": min_test_share,
        "min_sentences": min_sentences,
        "max_sentences": max_sentences,
        "sentences_per_item": sentences_per_item,
        "seed": seed,
    }
    per_class = Counter(c.wnid for c in kept)
    counts: dict[str, Any] = {
        "captions": len(captions),
        "kept_more_than_one_word": len(kept),
        "dropped_short": len(captions) - len(kept),
        "classes": len(wnids),
        "described_classes_without_captions": sorted(set(descriptions) - set(wnids)),
        "captions_train": int((~is_test).sum()),
        "captions_test": int(is_test.sum()),
        "chunks": int(chunk_start[-1]),
        "items_train": n_train,
        "items_test": len(items) - n_train,
        "per_class": {w: {"captions": per_class[w], "sentences": len(chunks[w])} for w in wnids},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HEADER_FILE).unlink(missing_ok=True)  # the header marks a complete build: written last
    atomic_write_jsonl(
        out_dir / ITEMS_FILE,
        (
            {"index": c.index, "wnid": c.wnid, "split": "test" if t else "train", "text": c.text(with_tags)}
            for c, t in zip(kept, is_test)
        ),
    )
    atomic_write_jsonl(
        out_dir / SENTENCES_FILE, ({"wnid": w, "text": text} for w in wnids for text in chunks[w])
    )
    atomic_save_npy(out_dir / TRIPLES_FILE, items.astype(np.int32))
    atomic_write_text(out_dir / COUNTS_FILE, json.dumps(counts, indent=2))
    header = {
        "format": DATASET_FORMAT,
        "version": DATASET_VERSION,
        "build": os.urandom(6).hex(),
        "settings": settings,
        "sources": release_stamps(captions_file, descriptions_file),
        "classes": wnids,
        "class_names": [(names.get(w) or [w])[0] for w in wnids],
        "with_tags": with_tags,
        "items": {"train": n_train, "test": len(items) - n_train},
        "counts": {k: v for k, v in counts.items() if k != "per_class"},
    }
    atomic_write_text(out_dir / HEADER_FILE, json.dumps(header, indent=1))
    log.info(
        "relevance dataset %s: %d captions kept of %d, %d classes, %d train / %d test items",
        out_dir,
        len(kept),
        len(captions),
        len(wnids),
        counts["items_train"],
        counts["items_test"],
    )
    return counts


def read_header(out_dir: str | Path) -> dict[str, Any]:
    """The header of a complete build (a :class:`DatasetFormatError` names what to rebuild)."""
    path = Path(out_dir) / HEADER_FILE
    header = read_json(path, "a relevance dataset header (python -m experiments.build_relevance_dataset)")
    if not (
        isinstance(header, dict) and records_match(header, format=DATASET_FORMAT, version=DATASET_VERSION)
    ):
        raise DatasetFormatError(path, f"not a {DATASET_FORMAT} v{DATASET_VERSION} header; rebuild it")
    return header


def dataset_is_current(
    out_dir: str | Path, captions_file: Path, descriptions_file: Path, settings: dict
) -> bool:
    """A complete build from these files (same size and modification time) with these settings. A
    damaged build raises, naming the file and line, rather than being overwritten unnoticed."""
    if not (Path(out_dir) / HEADER_FILE).is_file():
        return False
    header = read_header(out_dir)
    read_json_header(Path(out_dir) / ITEMS_FILE)
    if not (captions_file.is_file() and descriptions_file.is_file()):
        return False  # rebuilding reports the missing file
    same_sources = header.get("sources") == release_stamps(captions_file, descriptions_file)
    return same_sources and all(header["settings"].get(k) == v for k, v in settings.items())


def read_relevance_dataset(out_dir: str | Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The header and the items per split (``train``/``test``) of a built relevance dataset, each
    ``{"split", "label", "caption" (release entry index), "sentence" (chunk row), "text"}``.

    Materialises every item's text: for inspection and small datasets (the DataModule reads the
    token arrays instead)."""
    out_dir = Path(out_dir)
    header = read_header(out_dir)
    captions = read_kept_captions(out_dir)
    chunks = [row["text"] for _, row in read_jsonl(out_dir / SENTENCES_FILE, "one class text chunk per line")]
    items = np.load(out_dir / TRIPLES_FILE, mmap_mode="r")
    n_train = header["items"]["train"]  # the train items come first
    joined = [
        {
            "split": "train" if k < n_train else "test",
            "label": label,
            "caption": captions[c]["index"],
            "sentence": s,
            "text": f"{captions[c]['text']} {chunks[s]}",
        }
        for k, (c, s, label) in enumerate(items.tolist())
    ]
    splits = {"train": joined[:n_train], "test": joined[n_train:]}
    for split, rows in splits.items():
        require_rows(rows, split, out_dir / ITEMS_FILE)
    return header, splits


def read_kept_captions(out_dir: str | Path) -> list[dict[str, Any]]:
    """The kept captions of a build (:data:`ITEMS_FILE`), each line checked: ``text`` and a ``split``
    of ``train`` / ``test``; a bad line raises, naming the file, line and field."""
    path = Path(out_dir) / ITEMS_FILE
    contents = "one kept caption per line (python -m experiments.build_relevance_dataset)"
    try:  # the common case at full speed; any problem is found again, with its line, below
        rows = [json.loads(line) for line in path.read_bytes().splitlines()]
        if all(
            type(row) is dict and row.get("split") in ("train", "test") and type(row.get("text")) is str
            for row in rows
        ):
            return rows
    except (OSError, ValueError):
        pass
    rows = []
    for number, row in read_jsonl(path, contents):
        split = json_field(row, "split", str, path, number)
        if split not in ("train", "test"):
            raise DatasetFormatError(path, f"unknown split {split!r}", line=number, field="split")
        json_field(row, "text", str, path, number)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------ tokens
def tokens_dir(out_dir: str | Path, settings: dict[str, Any]) -> Path:
    """The folder of the token arrays for these tokenizer settings."""
    return Path(out_dir) / f"tokens_{settings_digest(settings)}"


def token_settings(
    text_encoder: str, vocab_size: int, min_freq: int, max_length: int, truncate: str
) -> dict[str, Any]:
    if truncate not in TRUNCATE_SIDES:
        raise ValueError(f"truncate must be one of {TRUNCATE_SIDES}, got {truncate!r}")
    return {
        "text_encoder": text_encoder,
        "vocab_size": vocab_size,
        "min_freq": min_freq,
        "max_length": max_length,
        "truncate": truncate,
    }


def tokens_are_current(out_dir: str | Path, settings: dict[str, Any]) -> bool:
    path = tokens_dir(out_dir, settings) / TOKENS_FILE
    if not path.is_file():
        return False
    meta = json.loads(path.read_text())
    return records_match(meta, build=read_header(out_dir)["build"], settings=settings)


def write_relevance_tokens(out_dir: str | Path, settings: dict[str, Any]) -> Path:
    """Tokenise the built dataset's captions and class text chunks once each, for the tokenizer of
    ``settings`` (:func:`token_settings`): an offline tokenizer (``roberta_small``'s byte-level BPE,
    ``bilstm``'s vocabulary) is trained on the training captions and their classes' chunks, each
    text once. Captions keep at most the token budget (``max_length`` less the special tokens), cut
    at ``truncate``'s side. Returns the tokens folder."""
    out_dir = Path(out_dir)
    header = read_header(out_dir)
    captions = read_kept_captions(out_dir)
    chunks = [row for _, row in read_jsonl(out_dir / SENTENCES_FILE, "one class text chunk per line")]
    train_classes = {row["wnid"] for row in captions if row["split"] == "train"}
    train_texts = [row["text"] for row in captions if row["split"] == "train"]
    train_texts += [row["text"] for row in chunks if row["wnid"] in train_classes]
    tokenizer = build_tokenizer(
        settings["text_encoder"],
        train_texts,
        vocab_size=settings["vocab_size"],
        min_freq=settings["min_freq"],
    )
    del train_texts
    prefix, suffix = tokenizer.frame()
    budget = settings["max_length"] - len(prefix) - len(suffix)
    folder = tokens_dir(out_dir, settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TOKENS_FILE).unlink(missing_ok=True)
    keep_end = settings["truncate"] == "start"
    encode_pieces_to_arrays(tokenizer, [row["text"] for row in captions], budget, keep_end).save(
        folder, "captions"
    )
    # a chunk follows its caption after a blank, which byte-level BPE folds into the next token ("ĠA")
    encode_pieces_to_arrays(tokenizer, [" " + row["text"] for row in chunks]).save(folder, "sentences")
    meta = {
        "build": header["build"],
        "settings": settings,
        "frame": [prefix, suffix],
        "vocab_size": len(tokenizer),
        "pad_id": tokenizer.pad_id,
        "tokenizer": tokenizer.state(),
    }
    atomic_write_text(folder / TOKENS_FILE, json.dumps(meta))
    log.info("relevance tokens %s: %s, %d tokens", folder, settings["text_encoder"], len(tokenizer))
    return folder


def load_relevance_splits(
    out_dir: str | Path, settings: dict[str, Any]
) -> tuple[dict, Any, dict[str, JoinedTexts]]:
    """``(header, tokenizer, {"train", "test"} datasets)`` of a built and tokenised dataset, its arrays
    memory-mapped."""
    header = read_header(out_dir)
    folder = tokens_dir(out_dir, settings)
    meta = json.loads((folder / TOKENS_FILE).read_text())
    captions, chunks = TokenArrays.load(folder, "captions"), TokenArrays.load(folder, "sentences")
    items = np.load(Path(out_dir) / TRIPLES_FILE, mmap_mode="r")
    n_train = header["items"]["train"]
    frame = (meta["frame"][0], meta["frame"][1])
    splits = {
        name: JoinedTexts(captions, chunks, part, settings["max_length"], frame, settings["truncate"])
        for name, part in (("train", items[:n_train]), ("test", items[n_train:]))
    }
    return header, tokenizer_from_state(meta["tokenizer"]), splits
