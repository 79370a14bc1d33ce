"""ImageNet-Captions reader: the release, ImageNet's class names and the user's class descriptions.

The release (Fang et al. 2022, ``mlfoundations/imagenet-captions``) is one JSON list; every entry is::

    {"filename": "n01440764_10026.JPEG", "wnid": "n01440764", "title": str, "description": str,
     "tags": [str, ...]}

with the image under ``<images>/<wnid>/<filename>`` (ImageNet's train layout). Class names come from
ImageNet's ``LOC_synset_mapping.txt`` (``<wnid> <name>, <synonym>, ...`` per line).

Class descriptions are the user's file (seed 000: Wikipedia's summary, plus the Description section
for animal species and breeds). Format: one JSON object, wnid -> either a text (split into sentences
here, without downloads: :func:`split_sentences`) or a list of sentences::

    {"n02509815": "The red panda is a small mammal native to the eastern Himalayas. It has ...",
     "n01443537": ["The goldfish is a freshwater fish.", "It is commonly kept as a pet."]}

Every format problem raises :class:`~datamodules.errors.DatasetFormatError` naming the file and the
entry or field. An entry repeating an earlier ``filename`` is dropped (counted and logged; a warning
when its caption differs). The per-class train/test split of the captions (:func:`split_per_class`)
is shared by the relevance dataset and the captioned-images DataModule.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from datamodules.errors import (
    DatasetFormatError,
    DuplicateRows,
    decode_utf8,
    json_field,
    read_json,
    read_lines,
)

log = logging.getLogger(__name__)

CAPTION_FIELDS = {"filename": str, "wnid": str, "title": str, "description": str, "tags": list}
WNID = re.compile(r"n\d{8}")


class Caption(NamedTuple):
    """One entry of the release; ``index`` is its position in the JSON list (a named tuple: the
    release has ~464k entries)."""

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
    entry repeating an earlier ``filename`` is dropped and counted (the first one is kept).

    A well-formed entry passes one cheap test (the release has ~464k); any other gets the detailed
    checks, which raise naming the entry and field."""
    path = Path(path)
    data = read_json(path, "a JSON list of {filename, wnid, title, description, tags} objects")
    if not isinstance(data, list):
        raise DatasetFormatError(path, f"expected a JSON list of entries, found {type(data).__name__}")
    known = set(known_wnids) if known_wnids is not None else None
    valid_wnids: set[str] = set()  # checked once per class, not per entry
    filenames = Counter(f for e in data if type(e) is dict and type(f := e.get("filename")) is str)
    repeated = {name for name, n in filenames.items() if n > 1}
    captions = []
    repeats = DuplicateRows(path, unit="entry")
    for i, entry in enumerate(data):
        if not _well_formed(entry, valid_wnids, known):
            _check_entry(entry, i, path, known)
            valid_wnids.add(entry["wnid"])
        wnid, filename, tags = entry["wnid"], entry["filename"], tuple(entry["tags"])
        caption = Caption(i, filename, wnid, entry["title"], entry["description"], tags)
        if filename not in repeated or repeats.is_new(
            filename, (wnid, caption.title, caption.description, caption.tags), i
        ):
            captions.append(caption)
    repeats.log(log)
    return captions


def _well_formed(entry: Any, valid_wnids: set[str], known: set[str] | None) -> bool:
    """The common case, tested at once: an object with the five fields of the right types, a
    checked wnid (of a known class) and a filename of that class."""
    if type(entry) is not dict:
        return False
    try:
        filename, wnid, tags = entry["filename"], entry["wnid"], entry["tags"]
        title, description = entry["title"], entry["description"]
    except KeyError:
        return False
    return (
        type(filename) is str
        and type(wnid) is str
        and type(title) is str
        and type(description) is str
        and type(tags) is list
        and set(map(type, tags)) <= _ONLY_STR
        and wnid in valid_wnids
        and (known is None or wnid in known)
        and filename.startswith(wnid)
        and filename[len(wnid) : len(wnid) + 1] == "_"
        and "/" not in filename
        and "\\" not in filename
    )


_ONLY_STR = {str}


def _check_entry(entry: Any, i: int, path: Path, known: set[str] | None) -> None:
    """The detailed checks of one entry: raise naming the entry and field of the first problem."""
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
    for j, tag in enumerate(entry["tags"]):
        if not isinstance(tag, str):
            raise DatasetFormatError(
                path, f"entry {i}: tag {j} is {type(tag).__name__} {tag!r}, expected str", field="tags"
            )


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
_ABBREVIATIONS = frozenset("e.g i.e etc approx ca cf vs mr mrs dr st no sp spp var".split())
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
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)  # classes in sorted order
    order = np.argsort(codes, kind="stable")  # each class's members, in ascending position
    is_test = np.zeros(len(codes), dtype=bool)
    for members in np.split(order, np.cumsum(np.bincount(codes))[:-1]):
        n_test = num_test_captions(len(members), test_fraction, small_class, min_test_share)
        is_test[rng.permutation(members)[:n_test]] = True
    return is_test
