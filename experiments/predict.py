"""Predict with an exported model: a folder of images -> one JSON line per image.

    python -m experiments.predict --export <run_dir>/export --images <folder> [--tags tags.jsonl] [--out preds.jsonl]

Multi-label tagger: ``--tags`` is an optional JSON-lines file ``{"image": "<file name>", "tags": ["sky", ...]}``
with the user tags of each image (tags outside the model's tag vocabulary are ignored and counted);
without it the tag branch sees an empty tag vector. Each output line holds the image, the predicted
labels (the exported rule: the composite by default), their probabilities and the predicted count.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from datamodules.transforms import ImageTransforms
from experiments.export import load_exported
from lit_modules.tagger import RULES, apply_rule

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
            raise ValueError(f"{path}:{line_no}: expected {{\"image\": ..., \"tags\": [...]}}: {err}") from err
    return tags


def predict_tagger(net, spec: dict, images: list[Path], folder: Path, user_tags: dict[str, list[str]],
                   batch_size: int = 32) -> Iterator[dict]:
    data = spec["data"]
    labels, vocab = data["label_names"], {t: i for i, t in enumerate(data["tag_names"])}
    transform = ImageTransforms(**data["transforms"]).eval()
    rule, top_k, min_k = spec["model"]["rule"], spec["model"]["top_k"], spec["model"]["min_k"]
    alpha = spec["model"].get("alpha") or 0.5
    unknown = 0
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels, tag_vecs = [], []
        for path in chunk:
            with Image.open(path) as img:
                pixels.append(transform(img.convert("RGB")))
            vec = torch.zeros(len(vocab))
            for tag in user_tags.get(str(path.relative_to(folder)), user_tags.get(path.name, [])):
                if tag in vocab:
                    vec[vocab[tag]] = 1.0
                else:
                    unknown += 1
            tag_vecs.append(vec)
        with torch.inference_mode():
            out = net(torch.stack(pixels), torch.stack(tag_vecs))
            chosen = apply_rule(out, rule, top_k=top_k, min_k=min_k, alpha=alpha)
            probs = out[RULES[rule].scores].sigmoid()
        for i, path in enumerate(chunk):
            idx = chosen[i].nonzero().flatten().tolist()
            idx.sort(key=lambda j: -probs[i, j].item())
            yield {"image": str(path.relative_to(folder)), "labels": [labels[j] for j in idx],
                   "scores": [round(probs[i, j].item(), 4) for j in idx], "count": round(out["count"][i].item(), 3)}
    if unknown:
        log.warning("%d user tags were not in the model's tag vocabulary and were ignored", unknown)


PREDICTORS = {"multilabel_tagger": predict_tagger}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, type=Path, help="export folder (or its model.safetensors)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--tags", type=Path, default=None, help="JSON lines of user tags per image")
    parser.add_argument("--out", type=Path, default=None, help="output JSON lines (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    net, spec = load_exported(args.export)
    kind = spec["model"].get("kind")
    if kind not in PREDICTORS:
        raise SystemExit(f"no predictor for exported model kind {kind!r}")
    images = list_images(args.images)
    rows = PREDICTORS[kind](net, spec, images, args.images, read_user_tags(args.tags), args.batch_size)
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
