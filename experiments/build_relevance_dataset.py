"""Build seed 000's relevance training set from ImageNet-Captions and the class descriptions.

Usage::

    python -m experiments.build_relevance_dataset --root data/imagenet_captions \\
        --out data/imagenet_captions/relevance_dataset \\
        [--captions imagenet_captions.json] [--descriptions class_descriptions.json] \\
        [--set test_fraction=0.23 ...]

Keeps captions whose title or description has more than one word, splits them per class into train/test
(classes of <= 100 captions: at least half in train, at least 20 % in test) and pairs every caption with each
of its class's 2-10 longest description sentences. Writes the dataset folder that
:mod:`datamodules.imagenet_captions.relevance_dataset` describes (``dataset.json``, the caption and sentence
lines, ``item_triples.npy``, ``relevance_counts.json``; each renamed into place) and prints the counts.
Defaults come from the ``build:`` node of ``conf/data/imagenet_captions.yaml`` (the seed's settings);
``--set key=value`` overrides one.
A malformed input is reported as ``<file>: [field]: <problem>`` with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from datamodules.imagenet_captions.relevance_dataset import write_relevance_dataset
from experiments.common import PROJECT_ROOT, print_counts

DATA_CONFIG = PROJECT_ROOT / "conf" / "data" / "imagenet_captions.yaml"


def build_defaults() -> dict:
    """The ``build:`` settings of the data config (the seed's split and sentence counts)."""
    return dict(yaml.safe_load(DATA_CONFIG.read_text())["build"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the relevance training set (caption + class sentence items)."
    )
    parser.add_argument("--root", required=True, type=Path, help="folder of the captions and descriptions")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--captions", default="imagenet_captions.json", help="release JSON, relative to --root"
    )
    parser.add_argument(
        "--descriptions", default="class_descriptions.json", help="class descriptions, relative to --root"
    )
    parser.add_argument(
        "--synset-mapping", default="LOC_synset_mapping.txt", help="class names (optional file)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a build setting ({', '.join(build_defaults())})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = build_defaults()
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key not in settings:
            print(f"error: unknown build setting {key!r}; one of {sorted(settings)}", file=sys.stderr)
            return 2
        settings[key] = yaml.safe_load(value)
    mapping = args.root / args.synset_mapping
    return print_counts(
        lambda: write_relevance_dataset(
            args.root / args.captions,
            args.root / args.descriptions,
            args.out,
            synset_mapping=mapping if mapping.is_file() else None,
            **settings,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
