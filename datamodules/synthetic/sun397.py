"""Synthetic twin of SUN397, written in the release layout and read by :mod:`datamodules.sun397`.

A few dozen real SUN397 scene classes, spanning eleven of the seed's hashtags and ``other`` (as the
committed mapping ``conf/hashtags/sun397_hashtags.csv`` maps them), each drawn as a procedural scene
from :mod:`datamodules.synthetic.world`: a background of scene elements shared by the classes of a
hashtag family (water, snow, grass under a sky, an indoor wall ...) plus the class's own glyph, so
that classes, and therefore hashtags, are learnable from pixels by a small CNN at 64 px.

Layout (exactly the release's)::

    SUN397/<letter>/<class>[/<subclass>]/sun_<16 lowercase letters>.jpg
    SUN397/ClassName.txt, Partitions/ClassName.txt        "/a/abbey" per line, alphabetical
    Partitions/Training_NN.txt, Partitions/Testing_NN.txt NN = 01..10, per class half / half, grouped by class

Known noise, recorded in ``synthetic_meta.json``: ``label_noise`` of the images are drawn with
another class's signature but filed under their own class; distractor glyphs appear at random.
Test knobs: ``empty_classes`` extra class-list entries without any image, ``corrupt_images``
truncated JPEG files (listed in the partitions like any other image).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synthetic.cache import META_FILE, ensure_generated
from datamodules.synthetic.world import Scene, glyph_palette, render_scene, save_jpeg

GENERATOR = "sun397"
VERSION = 1
NUM_PARTITIONS = 10

#: class -> background elements (a hashtag family shares them; see module doc).
CLASSES: dict[str, tuple[str, ...]] = {
    # sport
    "/b/baseball_field": ("sky", "grass"),
    "/t/tennis_court/outdoor": ("sky", "sand"),
    "/s/ski_slope": ("sky", "snow"),
    # forest
    "/f/forest/broadleaf": ("grass",),
    "/r/rainforest": ("grass", "night"),
    # water
    "/l/lake/natural": ("sky", "water"),
    "/o/ocean": ("clouds", "water"),
    "/r/river": ("grass", "water"),
    # snow
    "/i/iceberg": ("water", "snow"),
    "/s/snowfield": ("snow",),
    # nature
    "/m/mountain": ("sunset", "grass"),
    "/d/desert/sand": ("sky", "sand"),
    "/v/valley": ("clouds", "grass"),
    # sky
    "/s/sky": ("clouds",),
    # shopping
    "/s/shoe_shop": (),
    "/t/toyshop": (),
    "/s/supermarket": (),
    # church
    "/a/abbey": ("sunset",),
    "/c/cathedral/indoor": ("night",),
    # cafe
    "/c/coffee_shop": (),
    "/r/restaurant": (),
    # home
    "/b/bedroom": (),
    "/k/kitchen": (),
    "/l/living_room": (),
    # street
    "/s/street": ("sky",),
    "/a/alley": ("night", "sky"),
    # other (no hashtag)
    "/p/pantry": (),
    "/w/wind_farm": ("sky", "grass"),
    "/o/office": (),
    "/c/classroom": (),
    "/b/barn": ("sunset", "sand"),
    "/j/jail_cell": ("night",),
}
#: real SUN397 classes used as class-list entries without images (``empty_classes``).
EMPTY_CLASSES = ("/a/archive", "/b/boathouse", "/c/catacomb", "/e/elevator_shaft")


def _image_name(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        name = "sun_" + "".join(rng.choice(list(string.ascii_lowercase), 16)) + ".jpg"
        if name not in taken:
            taken.add(name)
            return name


def write_sun397(
    folder: Path,
    *,
    images_per_class: int = 60,
    image_size: int = 64,
    seed: int = 0,
    num_classes: int | None = None,
    label_noise: float = 0.02,
    distractor_prob: float = 0.3,
    empty_classes: int = 0,
    corrupt_images: int = 0,
) -> dict[str, Any]:
    """Write the twin into ``folder`` (see module doc); return its meta."""
    params = {
        "images_per_class": images_per_class,
        "image_size": image_size,
        "seed": seed,
        "num_classes": num_classes,
        "label_noise": label_noise,
        "distractor_prob": distractor_prob,
        "empty_classes": empty_classes,
        "corrupt_images": corrupt_images,
    }
    if images_per_class < 2:
        raise ValueError("images_per_class must be at least 2 (train and test halves)")
    rng = np.random.default_rng(seed)
    chosen = list(CLASSES)[: num_classes or len(CLASSES)]
    palette = glyph_palette(seed)
    glyphs = {c: palette[i] for i, c in enumerate(chosen)}
    spare = palette[len(chosen) :]
    empty = list(EMPTY_CLASSES[:empty_classes])
    classes = sorted(chosen + empty)
    image_root = folder / "SUN397"
    files: dict[str, list[str]] = {}
    noisy = 0
    for c in chosen:
        target = image_root / c.lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        files[c] = []
        for _ in range(images_per_class):
            drawn = c
            if rng.random() < label_noise:
                drawn = chosen[int(rng.integers(len(chosen)))]
                noisy += drawn != c
            glyph_list = [glyphs[drawn]]
            if rng.random() < distractor_prob:
                glyph_list.append(spare[int(rng.integers(len(spare)))])
            scene = Scene(
                elements=frozenset(CLASSES[drawn]),
                glyphs=tuple(glyph_list[i] for i in rng.permutation(len(glyph_list))),
            )
            name = _image_name(rng, taken)
            save_jpeg(render_scene(scene, image_size, rng), target / name)
            files[c].append(name)
    for c in empty:
        (image_root / c.lstrip("/")).mkdir(parents=True, exist_ok=True)
    corrupted = []
    all_images = [f"{c}/{n}" for c in chosen for n in files[c]]
    for i in rng.choice(len(all_images), size=min(corrupt_images, len(all_images)), replace=False):
        path = image_root / all_images[int(i)].lstrip("/")
        path.write_bytes(path.read_bytes()[:40])  # a truncated JPEG: header only
        corrupted.append(all_images[int(i)])
    class_text = "".join(c + "\n" for c in classes)
    (folder / "Partitions").mkdir(parents=True, exist_ok=True)
    (folder / "Partitions" / "ClassName.txt").write_text(class_text)
    (image_root / "ClassName.txt").write_text(class_text)
    half = images_per_class // 2
    for n in range(1, NUM_PARTITIONS + 1):
        train, test = [], []
        for c in classes:  # grouped by class in ClassName order, like the release
            if c not in files:
                continue
            order = rng.permutation(len(files[c]))
            train += [f"{c}/{files[c][j]}" for j in order[:half]]
            test += [f"{c}/{files[c][j]}" for j in order[half : 2 * half]]
        (folder / "Partitions" / f"Training_{n:02d}.txt").write_text("".join(p + "\n" for p in train))
        (folder / "Partitions" / f"Testing_{n:02d}.txt").write_text("".join(p + "\n" for p in test))
    meta = {
        "generator": GENERATOR,
        "version": VERSION,
        "params": params,
        "classes": classes,
        "classes_with_images": chosen,
        "empty_classes": empty,
        "corrupt_images": sorted(corrupted),
        "noisy_images": int(noisy),
        "glyphs": {c: [g.shape, g.colour] for c, g in glyphs.items()},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def ensure_sun397(root: str | Path, **params: Any) -> Path:
    """Generate the twin into ``root`` unless it is already there with the same parameters."""
    defaults = {
        "images_per_class": 60,
        "image_size": 64,
        "seed": 0,
        "num_classes": None,
        "label_noise": 0.02,
        "distractor_prob": 0.3,
        "empty_classes": 0,
        "corrupt_images": 0,
    }
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError(f"unknown synthetic SUN397 parameters {sorted(unknown)}")
    full = {**defaults, **params}
    return ensure_generated(
        root,
        generator=GENERATOR,
        version=VERSION,
        params=full,
        write=lambda folder: write_sun397(folder, **full),
    )
