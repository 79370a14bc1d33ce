"""Class descriptions for the relevance dataset: from a Wikipedia summaries file or from WordNet.

The relevance classifier of seed 000 learns from captions joined with sentences that describe their
class; the seed takes them from English Wikipedia (each class's summary, plus the Description
section of animal species and breeds). This module writes the class-description file the reader
expects (:func:`~datamodules.imagenet_captions.reader.read_class_descriptions`: wnid -> sentences)
from either source:

* :func:`wikipedia_descriptions`: the user's file of Wikipedia texts per class, one JSON object
  ``{wnid: text}`` or ``{wnid: {"summary": text, "description": text}}``, or JSON lines
  ``{"wnid", "summary"[, "description"]}``; texts are split into sentences offline
  (:func:`~datamodules.imagenet_captions.reader.split_sentences`), summary first.
* :func:`wordnet_descriptions`: offline, from WordNet 3.0. ImageNet's wnids are WordNet 3.0 noun
  offsets (``n02509815`` is synset 2509815 of the noun database), so every class has a synset:
  its names and gloss, its usage examples, and the glosses of its hypernyms up to ``depth`` levels
  make real sentences about the class (the WordNet reader is passed in:
  :func:`experiments.prepare_wordnet.load_wordnet`).

Both return ``{wnid: [sentences]}``; :func:`merge_descriptions` fills the classes one source misses
from another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datamodules.errors import DatasetFormatError, read_text
from datamodules.imagenet_captions.reader import WNID, split_sentences


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _name(lemma: str) -> str:
    return lemma.replace("_", " ")


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def wordnet_descriptions(wnids: Iterable[str], wordnet: Any, depth: int = 3) -> dict[str, list[str]]:
    """Sentences about each class from WordNet 3.0 (see the module docstring): ``"<Name> (also
    <synonyms>): <gloss>."``, the synset's usage examples, then for each hypernym up to ``depth``
    levels ``"<A name> is a kind of <hypernym>: <its gloss>."``. A wnid that is not a noun synset of
    this WordNet raises ``ValueError`` naming it."""
    out = {}
    for wnid in wnids:
        if not WNID.fullmatch(wnid):
            raise ValueError(f"{wnid!r} is not a WordNet id like 'n01440764'")
        try:
            synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        except Exception as err:  # nltk raises WordNetError / ValueError for an unknown offset
            raise ValueError(
                f"{wnid}: no noun synset at offset {int(wnid[1:])} in this WordNet ({err})"
            ) from err
        names = [_name(lemma) for lemma in synset.lemma_names()]
        head = names[0]
        also = f" (also {', '.join(names[1:4])})" if len(names) > 1 else ""
        sentences = [_sentence(f"{head}{also}: {synset.definition()}")]
        sentences += [_sentence(example) for example in synset.examples()]
        child, level = head, 0
        hypernyms = synset.hypernyms() or synset.instance_hypernyms()
        while hypernyms and level < depth:
            parent = hypernyms[0]
            parent_name = _name(parent.lemma_names()[0])
            sentences.append(
                _sentence(f"{_article(child)} {child} is a kind of {parent_name}: {parent.definition()}")
            )
            child, level = parent_name, level + 1
            hypernyms = parent.hypernyms() or parent.instance_hypernyms()
        out[wnid] = sentences
    return out


def wikipedia_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Sentences of the user's Wikipedia texts per class (formats in the module docstring)."""
    path = Path(path)
    text = read_text(path, "Wikipedia texts per class: {wnid: text} or JSON lines {wnid, summary, ...}")
    try:
        data = json.loads(text)
        records = data.items() if isinstance(data, dict) else None
    except ValueError:
        data = None
    if data is None or records is None:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DatasetFormatError(path, f"invalid JSON ({err.args[0]})", line=number) from err
            if not isinstance(row, dict) or not isinstance(row.get("wnid"), str):
                raise DatasetFormatError(path, "expected an object with a wnid", line=number, field="wnid")
            records.append((row["wnid"], row))
    out: dict[str, list[str]] = {}
    for wnid, value in records:
        if not WNID.fullmatch(wnid):
            raise DatasetFormatError(path, f"{wnid!r} is not a WordNet id like 'n01440764'", field=wnid)
        parts = [value] if isinstance(value, str) else [value.get("summary"), value.get("description")]
        if not all(p is None or isinstance(p, str) for p in parts) or not any(parts):
            raise DatasetFormatError(path, "expected a text or {summary, description} texts", field=wnid)
        out.setdefault(wnid, []).extend(s for p in parts if p for s in split_sentences(p))
    return out


def merge_descriptions(
    primary: Mapping[str, Sequence[str]], fallback: Mapping[str, Sequence[str]], min_sentences: int = 2
) -> tuple[dict[str, list[str]], list[str]]:
    """``primary``'s sentences where it has at least ``min_sentences`` for a class, else
    ``fallback``'s; returns the merged descriptions and the classes taken from ``fallback``."""
    merged, filled = {}, []
    for wnid in sorted(set(primary) | set(fallback)):
        if len(primary.get(wnid, ())) >= min_sentences or wnid not in fallback:
            merged[wnid] = list(primary.get(wnid, ()))
        else:
            merged[wnid] = list(fallback[wnid])
            filled.append(wnid)
    return merged, filled
