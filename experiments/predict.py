"""Predict with an exported model: a folder of images -> one JSON line per image.

    python -m experiments.predict --export <run_dir>/export --images <folder> [--tags tags.jsonl] [--out preds.jsonl]

``--tags`` is an optional JSON-lines file ``{"image": "<file name>", "tags": [...]}`` of what the user
attached to each image. The exported model's kind picks the predictor (``PREDICTORS``); the
multi-label tagger reads them as user tags (see :mod:`lit_modules.tagger.predict`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from experiments.export import load_exported

log = logging.getLogger("predict")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_user_tags(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    tags: dict[str, list[str]] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            tags[str(row["image"])] = [str(t) for t in row["tags"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f'{path}:{line_no}: expected {{"image": ..., "tags": [...]}}: {err}') from err
    return tags


#: Exported model kind (``export_metadata()["kind"]``) -> ``"module:function"`` predicting a list of
#: images: ``fn(net, spec, images, folder, tags, batch_size) -> Iterator[dict]`` (one JSON line each).
PREDICTORS = {
    "multilabel_tagger": "lit_modules.tagger.predict:predict_images",
    "hashtag_classifier": "lit_modules.hashtag.predict:predict_images",
    "captioned_image_classifier": "lit_modules.relevance.predict:predict_images",
    "cycle_retrieval": "lit_modules.retrieval.predict:predict_images",
}


def load_predictor(kind: str) -> Callable:
    if kind not in PREDICTORS:
        raise SystemExit(f"no predictor for exported model kind {kind!r}; known: {sorted(PREDICTORS)}")
    module, _, name = PREDICTORS[kind].partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", required=True, type=Path, help="export folder (or its model.safetensors)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--tags", type=Path, default=None, help="JSON lines of user tags per image")
    parser.add_argument("--out", type=Path, default=None, help="output JSON lines (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    net, spec = load_exported(args.export)
    predict_images = load_predictor(spec["model"].get("kind"))
    images = list_images(args.images)
    rows = predict_images(net, spec, images, args.images, read_user_tags(args.tags), args.batch_size)
    out = args.out.open("w") if args.out else sys.stdout
    try:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    finally:
        if args.out:
            out.close()
            log.info("%d predictions written to %s", len(images), args.out)


if __name__ == "__main__":
    main()
