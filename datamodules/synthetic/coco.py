"""Synthetic twin of MS-COCO 2014 captions with the Karpathy split, in the real layout::

    <root>/annotations/captions_{train,val}2014.json   COCO format (info, images, licenses, annotations)
    <root>/{train,val}2014/COCO_<split>2014_%012d.jpg
    <root>/dataset_coco.json                           Karpathy format (images[].split, sentences, cocoid)

Every picture is a :class:`~datamodules.synthetic.world.Scene` of one or two glyphs (shape x colour)
over an optional ground (water, grass, sand, snow), and each of its five captions names what is
drawn in a different template and word order ("a red circle and a blue star on the grass"), so
captions are learnable from pixels. Known noise: a share of captions drops one glyph's colour;
a few training images get 4 or 6 captions (the real data has images with more than 5), which the
reader must handle and count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synthetic.cache import META_FILE, ensure_generated
from datamodules.synthetic.world import COLOURS, GROUND_ELEMENTS, Glyph, Scene, render_scene, save_jpeg

GENERATOR = "datamodules.synthetic.coco"
VERSION = 1
SHAPES = ("circle", "square", "triangle", "star", "ring", "plus", "diamond", "crescent")
TEMPLATES = (
    "a {objects} {where}",
    "a picture of a {objects} {where}",
    "there is a {objects} {where}",
    "{where_cap} there is a {objects}",
    "an image showing a {objects} {where}",
    "a photo with a {objects} {where}",
)
WHERE = {
    None: ("on a plain background", "in an empty scene"),
    "water": ("on the water", "above the sea"),
    "grass": ("on the grass", "in a green field"),
    "sand": ("on the sand", "on a beach"),
    "snow": ("in the snow", "on a snowy ground"),
}


def _describe(
    rng: np.random.Generator, glyphs: Sequence[Glyph], ground: str | None, colour_drop: float
) -> str:
    names = [f"{g.colour} {g.shape}" if rng.random() >= colour_drop else g.shape for g in glyphs]
    order = rng.permutation(len(names))
    objects = " and a ".join(names[int(k)] for k in order)
    where = WHERE[ground][int(rng.integers(len(WHERE[ground])))]
    text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(
        objects=objects, where=where, where_cap=where.capitalize()
    )
    return (
        text[0].upper() + text[1:] + ("." if rng.random() < 0.7 else " ")
    )  # real captions: trailing dots/spaces vary


def write_coco(
    root: Path,
    num_images: int = 600,
    image_size: int = 32,
    seed: int = 0,
    test_images: int = 100,
    val_images: int = 50,
    colour_drop: float = 0.1,
    odd_caption_images: int = 4,
) -> dict[str, Any]:
    """Write the twin to ``root``: ``num_images`` images in all; the last ``val_images + test_images``
    are in ``val2014`` and the Karpathy val/test splits, the rest in ``train2014`` / split train."""
    rng = np.random.default_rng(seed)
    colours = sorted(COLOURS)
    per_split: dict[str, dict[str, list]] = {s: {"images": [], "annotations": []} for s in ("train", "val")}
    karpathy: list[dict[str, Any]] = []
    num_eval = val_images + test_images
    caption_id = 1
    for k in range(num_images):
        folder = "val" if k >= num_images - num_eval else "train"
        split = "train" if folder == "train" else ("val" if k < num_images - test_images else "test")
        cocoid = 100000 + 7 * k
        glyphs = tuple(
            Glyph(SHAPES[int(rng.integers(len(SHAPES)))], colours[int(rng.integers(len(colours)))])
            for _ in range(int(rng.integers(1, 3)))
        )
        ground = None if rng.random() < 0.3 else GROUND_ELEMENTS[int(rng.integers(len(GROUND_ELEMENTS)))]
        pixels = render_scene(Scene(frozenset({ground} if ground else ()), glyphs), image_size, rng)
        file_name = f"COCO_{folder}2014_{cocoid:012d}.jpg"
        (root / f"{folder}2014").mkdir(parents=True, exist_ok=True)
        save_jpeg(pixels, root / f"{folder}2014" / file_name)
        count = 5
        if folder == "train" and k < odd_caption_images:
            count = 4 if k % 2 == 0 else 6
        captions = [_describe(rng, glyphs, ground, colour_drop) for _ in range(count)]
        per_split[folder]["images"].append(
            {
                "license": 1,
                "file_name": file_name,
                "coco_url": "",
                "height": image_size,
                "width": image_size,
                "date_captured": "2013-11-14 13:02:53",
                "flickr_url": "",
                "id": cocoid,
            }
        )
        sentences = []
        for caption in captions:
            per_split[folder]["annotations"].append(
                {"image_id": cocoid, "id": caption_id, "caption": caption}
            )
            sentences.append(
                {
                    "tokens": caption.lower().strip(" .").split(),
                    "raw": caption,
                    "imgid": k,
                    "sentid": caption_id,
                }
            )
            caption_id += 1
        karpathy.append(
            {
                "filepath": f"{folder}2014",
                "sentids": [s["sentid"] for s in sentences],
                "filename": file_name,
                "imgid": k,
                "split": split,
                "sentences": sentences,
                "cocoid": cocoid,
            }
        )
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for folder, content in per_split.items():
        data = {
            "info": {
                "description": "COCO 2014 Dataset (synthetic twin)",
                "url": "",
                "version": "1.0",
                "year": 2014,
                "contributor": GENERATOR,
                "date_created": "2017/09/01",
            },
            "images": content["images"],
            "licenses": [{"url": "", "id": 1, "name": "synthetic"}],
            "annotations": content["annotations"],
        }
        (root / "annotations" / f"captions_{folder}2014.json").write_text(json.dumps(data))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return {"num_images": num_images, "odd_caption_images": odd_caption_images}


def ensure_coco(root: str | Path, **params: Any) -> Path:
    """Generate the twin into ``root`` unless it already holds it for the same parameters."""

    def write(folder: Path) -> None:
        summary = write_coco(folder, **params)
        (folder / META_FILE).write_text(
            json.dumps({"generator": GENERATOR, "version": VERSION, "params": params, "summary": summary})
        )

    return ensure_generated(root, generator=GENERATOR, version=VERSION, params=params, write=write)
