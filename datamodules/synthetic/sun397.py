"""Synthetic twins of SUN397, written in the release layout and read by :mod:`datamodules.sun397`.

Two twins. :func:`write_sun397` (the learning twin): a few dozen real SUN397 scene classes, spanning
eleven of the seed's hashtags and ``other`` (under each of the shipped class -> hashtag tables of
``conf/hashtags``; they differ on one of these classes: ``/s/ski_slope`` is #snow in the author's
table, #sport under the WordNet rules), each drawn as a procedural scene
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

:func:`write_scale_twin` (the scale twin): the release's metadata at its real size (or a fraction),
every image a hard link to one of a few small JPEGs, so that the real reader and DataModule run at
full size without gigabytes of pixels (``python -m experiments.bench scale``).
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synthetic.cache import ensure_written, write_meta
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


def _write_lists(
    folder: Path, classes: list[str], files: dict[str, list[str]], per_class: int, rng: np.random.Generator
) -> None:
    """``ClassName.txt`` (in ``SUN397/`` and ``Partitions/``) and the partitions: in each, ``per_class``
    training and as many other testing images of every class with images, grouped by class in class-list
    order like the release."""
    class_text = "".join(c + "\n" for c in classes)
    (folder / "Partitions").mkdir(parents=True, exist_ok=True)
    (folder / "Partitions" / "ClassName.txt").write_text(class_text)
    (folder / "SUN397" / "ClassName.txt").write_text(class_text)
    with_images = [c for c in classes if c in files]
    for n in range(1, NUM_PARTITIONS + 1):
        train, test = [], []
        for c in with_images:
            order = rng.permutation(len(files[c]))
            train += [f"{c}/{files[c][j]}\n" for j in order[:per_class]]
            test += [f"{c}/{files[c][j]}\n" for j in order[per_class : 2 * per_class]]
        (folder / "Partitions" / f"Training_{n:02d}.txt").write_text("".join(train))
        (folder / "Partitions" / f"Testing_{n:02d}.txt").write_text("".join(test))


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
    _write_lists(folder, classes, files, images_per_class // 2, rng)
    record = {
        "classes": classes,
        "classes_with_images": chosen,
        "empty_classes": empty,
        "corrupt_images": sorted(corrupted),
        "noisy_images": int(noisy),
        "glyphs": {c: [g.shape, g.colour] for c, g in glyphs.items()},
    }
    return write_meta(folder, GENERATOR, VERSION, params, record, indent=1)


def ensure_sun397(root: str | Path, **params: Any) -> Path:
    """Generate the twin into ``root`` unless it is already there with the same parameters."""
    return ensure_written(
        root, write_sun397, params, generator=GENERATOR, version=VERSION, what="synthetic SUN397"
    )


# ============================================================================================
# Scale twin: the release's metadata at its real size, images hard-linked
# ============================================================================================

#: The real release (Xiao et al., "SUN database: Large-scale scene recognition from abbey to zoo",
#: CVPR 2010): 108,754 images of 397 classes, at least 100 per class; each of the 10 partitions
#: lists 50 training and 50 testing images per class (19,850 lines per file).
REAL_IMAGES = 108_754
REAL_MIN_PER_CLASS = 100
PARTITION_PER_CLASS = 50
#: The small JPEGs every image path links to (a hard link shares the file: no pixels per image).
SCALE_SOURCE_JPEGS = 8
#: Spread of the per-class counts above the minimum (lognormal sigma). The paper gives the total, the
#: class count and the minimum only; the shape of the tail is this twin's assumption.
SCALE_TAIL_SIGMA = 1.0


def real_class_list() -> list[str]:
    """The 397 class paths of the release's ``ClassName.txt``, in its order, from the class -> hashtag
    table shipped with the project (it has one row per class, in that order)."""
    from datamodules.sun397 import read_hashtag_mapping

    table = Path(__file__).resolve().parents[2] / "conf" / "hashtags" / "sun397_hashtags.csv"
    return list(read_hashtag_mapping(table))


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` exactly."""
    share = weights / weights.sum() * total
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(-(share - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


def scale_class_counts(fraction: float, seed: int = 0, num_classes: int = 397) -> np.ndarray:
    """Images per class at ``fraction`` of the real size: ``round(fraction * 108,754)`` in all, each
    class at least ``max(2 * per-partition count, round(fraction * 100))``, the rest spread by a
    seeded lognormal tail (see :data:`SCALE_TAIL_SIGMA`)."""
    total = int(round(fraction * REAL_IMAGES))
    per_partition = max(1, int(round(fraction * PARTITION_PER_CLASS)))
    floor = max(2 * per_partition, int(round(fraction * REAL_MIN_PER_CLASS)))
    if total < floor * num_classes:
        raise ValueError(f"fraction {fraction} leaves fewer than {floor} images per class")
    tail = np.random.default_rng(seed).lognormal(0.0, SCALE_TAIL_SIGMA, num_classes)
    return floor + _largest_remainder(tail, total - floor * num_classes)


def _image_names(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct ``sun_<16 lowercase letters>.jpg`` names."""
    names: dict[str, None] = {}  # an ordered set
    while len(names) < count:
        letters = rng.integers(0, 26, size=(count - len(names), 16), dtype=np.uint8) + ord("a")
        names.update(dict.fromkeys("sun_" + row.tobytes().decode() + ".jpg" for row in letters))
    return list(names)


def write_scale_twin(root: Path, fraction: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Write the release at ``fraction`` of its real size into ``root`` (created; must be empty).

    The real layout and files: ``SUN397/<class>/sun_*.jpg`` for the 397 real classes (per-class
    counts from :func:`scale_class_counts`), ``SUN397/ClassName.txt``, ``Partitions/ClassName.txt``
    and the 10 ``Training_NN`` / ``Testing_NN`` lists (``round(50 * fraction)`` images per class
    each, disjoint within a partition, grouped by class in class-list order). Every image is a hard
    link to one of :data:`SCALE_SOURCE_JPEGS` small JPEGs written once under ``root/scale_twin_jpegs``.

    Returns ``{"items": images written, "overrides": Hydra overrides that make the real data config
    (conf/data/sun397.yaml) read it, "experiment": the real-data experiment}``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "SUN397").exists() or (root / "Partitions").exists():
        raise FileExistsError(
            f"{root} already holds a SUN397 release; write the scale twin into an empty folder"
        )
    rng = np.random.default_rng(seed)
    classes = real_class_list()
    counts = scale_class_counts(fraction, seed, len(classes))
    per_partition = max(1, int(round(fraction * PARTITION_PER_CLASS)))
    sources = root / "scale_twin_jpegs"
    sources.mkdir()
    jpegs = []
    for k in range(SCALE_SOURCE_JPEGS):  # 4:3 like most SUN397 photos; a gradient, a real baseline JPEG
        h, w = 48, 64
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        pixels[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        pixels[..., 1] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
        pixels[..., 2] = 32 * k
        jpegs.append(sources / f"source_{k}.jpg")
        save_jpeg(pixels, jpegs[-1])
    image_root = root / "SUN397"
    files: dict[str, list[str]] = {}
    written = 0
    for c, count in zip(classes, counts):
        folder = image_root / c.lstrip("/")
        folder.mkdir(parents=True)
        files[c] = _image_names(rng, int(count))
        for j, name in enumerate(files[c]):
            os.link(jpegs[(written + j) % len(jpegs)], folder / name)
        written += int(count)
    _write_lists(root, classes, files, per_partition, rng)
    return {"items": written, "overrides": [f"data.root={root}"], "experiment": "hashtag_sun397"}
