"""Write the class-description file of the relevance dataset from WordNet or a Wikipedia summaries file.

Usage::

    python -m experiments.build_class_descriptions --root data/imagenet_captions [--source wordnet]
    python -m experiments.build_class_descriptions --root data/imagenet_captions --source wikipedia \\
        --wikipedia summaries.json [--fallback wordnet]

The classes are those of ``<root>/LOC_synset_mapping.txt`` when it is there, else the wnids of the
release (``<root>/imagenet_captions.json``), or ``--wnids FILE`` (one wnid per line, or a synset
mapping). ``wordnet`` needs WordNet 3.0 (``python -m experiments.prepare_wordnet``, offline from the
distribution's ``wordnet-base``). Writes ``<root>/class_descriptions.json`` (or ``--out``): wnid ->
sentences, the format :func:`datamodules.imagenet_captions.reader.read_class_descriptions` reads,
and prints how many classes each source gave and which have fewer than ``--min-sentences``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from datamodules.errors import DatasetFormatError
from datamodules.files import atomic_write_text
from datamodules.imagenet_captions.class_texts import (
    merge_descriptions,
    wikipedia_descriptions,
    wordnet_descriptions,
)
from datamodules.imagenet_captions.reader import WNID, read_imagenet_captions, read_synset_mapping
from experiments.common import print_counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build class_descriptions.json from WordNet or Wikipedia texts."
    )
    parser.add_argument("--root", required=True, type=Path, help="the release folder")
    parser.add_argument("--source", choices=["wordnet", "wikipedia"], default="wordnet")
    parser.add_argument("--wikipedia", type=Path, help="Wikipedia texts per class (--source wikipedia)")
    parser.add_argument(
        "--fallback", choices=["wordnet", "none"], default="wordnet", help="for classes Wikipedia misses"
    )
    parser.add_argument("--wnids", type=Path, help="the classes: one wnid per line or a synset mapping")
    parser.add_argument("--out", type=Path, help="output file (default <root>/class_descriptions.json)")
    parser.add_argument("--depth", type=int, default=3, help="WordNet hypernym levels described")
    parser.add_argument("--min-sentences", type=int, default=2)
    parser.add_argument("--nltk-data", help="the nltk_data folder holding WordNet")
    return parser.parse_args(argv)


def class_wnids(args: argparse.Namespace) -> list[str]:
    if args.wnids:
        lines = [line.split()[0] for line in args.wnids.read_text().splitlines() if line.strip()]
        bad = [w for w in lines if not WNID.fullmatch(w)]
        if bad:
            raise DatasetFormatError(args.wnids, f"not WordNet ids: {bad[:5]}")
        return lines
    mapping = args.root / "LOC_synset_mapping.txt"
    if mapping.is_file():
        return list(read_synset_mapping(mapping))
    return sorted({c.wnid for c in read_imagenet_captions(args.root / "imagenet_captions.json")})


def build(args: argparse.Namespace) -> dict:
    wnids = class_wnids(args)

    def from_wordnet(classes: Sequence[str]) -> dict[str, list[str]]:
        from experiments.prepare_wordnet import load_wordnet

        return wordnet_descriptions(classes, load_wordnet(args.nltk_data), depth=args.depth)

    filled: list[str] = []
    if args.source == "wordnet":
        descriptions = from_wordnet(wnids)
    else:
        if args.wikipedia is None:
            raise SystemExit("--source wikipedia needs --wikipedia FILE")
        wiki = {w: s for w, s in wikipedia_descriptions(args.wikipedia).items() if w in set(wnids)}
        short = [w for w in wnids if len(wiki.get(w, ())) < args.min_sentences]
        fallback = from_wordnet(short) if args.fallback == "wordnet" and short else {}
        descriptions, filled = merge_descriptions(
            {w: wiki.get(w, []) for w in wnids}, fallback, args.min_sentences
        )
    out = args.out or args.root / "class_descriptions.json"
    atomic_write_text(out, json.dumps(descriptions, indent=1, ensure_ascii=False))
    sentences = [len(s) for s in descriptions.values()]
    return {
        "out": str(out),
        "classes": len(descriptions),
        "source": args.source,
        "from_fallback": len(filled),
        "sentences_per_class": {"min": min(sentences, default=0), "max": max(sentences, default=0)},
        "below_min_sentences": [w for w, s in descriptions.items() if len(s) < args.min_sentences],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return print_counts(lambda: build(args), errors=(DatasetFormatError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
