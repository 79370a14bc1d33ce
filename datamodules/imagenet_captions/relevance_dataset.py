"""The relevance training set of seed 000, built once from an ImageNet-Captions release.

:func:`write_relevance_dataset` (``python -m experiments.build_relevance_dataset``, or the relevance
DataModule's ``prepare``) keeps captions whose title or description has more than one word, splits
them per class into train/test (:func:`~datamodules.imagenet_captions.reader.split_per_class`) and
pairs every caption with each of its class's 2-10 (longest) description sentences (the Cartesian
product), written as JSON lines: a header line, then one item per line. A split left empty is an error.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.errors import DatasetFormatError, json_field, read_jsonl, require_rows
from datamodules.files import atomic_path, atomic_write_text
from datamodules.imagenet_captions.reader import (
    read_class_descriptions,
    read_imagenet_captions,
    read_synset_mapping,
    select_sentences,
    split_per_class,
)

log = logging.getLogger(__name__)

DATASET_FORMAT = "relevance-dataset"
DATASET_VERSION = 1
ITEMS_FILE = "relevance_items.jsonl"
COUNTS_FILE = "relevance_counts.json"


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
    items_path = out_dir / ITEMS_FILE
    with atomic_path(items_path) as tmp:
        with tmp.open("w", encoding="utf-8", newline="\n") as out:
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
    per_class = Counter(c.wnid for c in kept)
    counts["per_class"] = {w: {"captions": per_class[w], "sentences": len(sentences[w])} for w in wnids}
    atomic_write_text(out_dir / COUNTS_FILE, json.dumps(counts, indent=2))
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
