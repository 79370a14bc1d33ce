"""Predict with an exported model: a folder of images -> one JSON line per image.

    python -m experiments.predict --export <run_dir>/export --images <folder> \\
        [--tags tags.jsonl] [--out preds.jsonl]

``--tags`` is an optional JSON-lines file ``{"image": "<path>", "tags": [...]}`` of what the user
attached to each image; ``image`` is the path relative to ``--images``, the absolute path, or a bare
file name that names exactly one image. Keys that match no image are reported. The exported model's
kind picks the predictor (``PREDICTORS``); the multi-label tagger reads them as user tags (see
:mod:`lit_modules.tagger.predict`).

Real folders hold broken files: every image is decoded once before prediction, and those that do not
decode are skipped with a warning and counted. ``--out`` is written atomically (a temporary file in
its folder, renamed when complete): a failure leaves an earlier file intact. A folder without images
is an error.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from datamodules.files import atomic_path
from experiments.common import doc_parser
from experiments.export import load_exported

log = logging.getLogger("predict")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    """The images under ``folder`` (recursively, by suffix), sorted; an error when there are none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise FileNotFoundError(
            f"no images under {folder} (searched recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return images


def readable_images(images: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Split ``images`` into those that decode and ``(path, reason)`` of those that do not. A full
    decode, since a header check passes a JPEG cut short (see :func:`datamodules.base.image_is_readable`)."""
    good, bad = [], []
    for path in images:
        try:
            with Image.open(path) as img:
                img.load()
            good.append(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            bad.append((path, str(err) or type(err).__name__))
    return good, bad


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


def match_user_tags(
    tags: dict[str, list[str]], images: list[Path], folder: Path
) -> tuple[dict[str, list[str]], list[str]]:
    """Key ``tags`` by each image's path relative to ``folder`` (what the predictors look up).

    A key matches an image by its path relative to ``folder``, its absolute path, or, when it is a
    bare file name, the one image with that name. Returns the re-keyed tags and the keys that matched
    no image (unknown paths, or a bare name shared by several images)."""
    relative = {str(p.relative_to(folder)): p for p in images}
    absolute = {str(p.resolve()): rel for rel, p in relative.items()}
    by_name: dict[str, list[str]] = {}
    for rel, p in relative.items():
        by_name.setdefault(p.name, []).append(rel)
    matched: dict[str, list[str]] = {}
    unmatched = []
    for key, values in tags.items():
        path = Path(key)
        if key in relative:
            rel = key
        elif path.is_absolute():
            rel = absolute.get(str(path.resolve()))
        elif len(path.parts) == 1 and len(by_name.get(key, [])) == 1:
            rel = by_name[key][0]
        else:
            rel = None
        if rel is None:
            unmatched.append(key)
        else:
            matched[rel] = values
    return matched, unmatched


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
    parser = doc_parser(__doc__)
    parser.add_argument("--export", required=True, type=Path, help="export folder (or its model.safetensors)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--tags", type=Path, default=None, help="JSON lines of user tags per image")
    parser.add_argument("--out", type=Path, default=None, help="output JSON lines (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    try:
        images = list_images(args.images)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    images, unreadable = readable_images(images)
    for path, reason in unreadable:
        log.warning("skipped unreadable image %s (%s)", path, reason)
    if unreadable:
        log.warning("%d unreadable image(s) skipped, %d to predict", len(unreadable), len(images))
    if not images:
        raise SystemExit(f"error: none of the images under {args.images} could be read")
    tags, unmatched = match_user_tags(read_user_tags(args.tags), images, args.images)
    if unmatched:
        shown = ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else "")
        log.warning(
            "%d tag key(s) in %s match no image under %s (by relative path, absolute path or unique "
            "file name) and were ignored: %s",
            len(unmatched),
            args.tags,
            args.images,
            shown,
        )

    net, spec = load_exported(args.export)
    predict_images = load_predictor(spec["model"].get("kind"))
    rows = predict_images(net, spec, images, args.images, tags, args.batch_size)
    lines = (json.dumps(row) + "\n" for row in rows)
    if args.out is None:
        sys.stdout.writelines(lines)
        return
    with atomic_path(args.out) as tmp, tmp.open("w") as out:
        out.writelines(lines)
    log.info(
        "%d predictions written to %s (%d unreadable image(s) skipped)",
        len(images),
        args.out,
        len(unreadable),
    )


if __name__ == "__main__":
    main()
