"""Build the NUS-WIDE index from a raw release (the first training run does it too, when needed).

Usage::

    python -m experiments.prepare_nuswide --root data/NUS-WIDE --out data/index \\
        [--image-dir Flickr] [--no-check-images] [--check-workers N] [--keep-unlabeled]

``--root`` holds the unpacked release (``ConceptsList/``, ``Groundtruth/``, ``ImageList/``,
``NUS_WID_Tags/`` and the image folder); the index is written to ``OUT/nuswide_index.bin``, where
``conf/data/nuswide.yaml`` looks for it (``data/index/nuswide_index.bin``). Training runs reuse it
while the release files and these settings are unchanged (the data config's ``check_images`` and
``drop_unlabeled`` must match the flags), and rebuild it otherwise. A malformed release is
reported as ``<file>:<line>: <problem>`` with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from datamodules.nuswide import INDEX_FILENAME, build_index, load_index
from experiments.common import print_counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="Build the NUS-WIDE index from a raw release.")
    parser.add_argument("--root", required=True, type=Path, help="folder of the unpacked release")
    parser.add_argument("--out", required=True, type=Path, help=f"output folder (gets {INDEX_FILENAME})")
    parser.add_argument("--image-dir", default="Flickr", help="image folder under --root (default: Flickr)")
    parser.add_argument(
        "--no-check-images",
        dest="check_images",
        action="store_false",
        help="do not check that every listed image exists and is readable",
    )
    parser.add_argument(
        "--check-workers",
        type=int,
        default=None,
        help="processes for the image checks (default: the CPUs, <= 8)",
    )
    parser.add_argument(
        "--keep-unlabeled",
        dest="drop_unlabeled",
        action="store_false",
        help="keep images without any concept label (dropped by default, as in the seed's Table 4.1)",
    )
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> dict:
    """Build the index; its path and statistics."""
    path = build_index(
        args.root,
        args.out / INDEX_FILENAME,
        image_dir=args.image_dir,
        check_images=args.check_images,
        check_workers=args.check_workers,
        drop_unlabeled=args.drop_unlabeled,
    )
    return {"index": str(path), "stats": load_index(path).stats}


def main(argv: Sequence[str] | None = None) -> int:
    """Build the index, print its path and statistics; return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return print_counts(lambda: build(args))


if __name__ == "__main__":
    sys.exit(main())
