"""Synthetic twin of NUS-WIDE, written in the real release layout.

The twin has the real 81 concepts and a made-up vocabulary of 1000 user tags. Each image shows
its concepts (a glyph per object concept, a background element per scene concept, see
:mod:`datamodules.synthetic.world`); parent concepts follow from children (``cat`` ->
``animal``, ``lake`` -> ``water``...), concept frequencies are Zipf-like and user tags are noisy:
a true concept is tagged with probability ~0.6, a wrong concept's tag slips in for ~5 % of the
images, irrelevant filler tags are added, and a few images carry no tag at all.

Layout (all text files CRLF, like the Windows-made release)::

    ConceptsList/Concepts81.txt                 81 names, alphabetical
    NUS_WID_Tags/TagList1k.txt                  1000 tags, most frequent first
    NUS_WID_Tags/{Train,Test}_Tags1k.dat        1000 x "0|1<TAB>" per row, aligned with image lists
    NUS_WID_Tags/AllTags1k.txt                  same, aligned with Imagelist.txt
    NUS_WID_Tags/{Train,Test}_Tags81.txt        81 x "0|1<SPACE>" per row
    ImageList/{Imagelist,TrainImagelist,TestImagelist}.txt   <dir>\\<NNNN>_<flickrid>.jpg
    Groundtruth/TrainTestLabels/Labels_<c>_{Train,Test}.txt  one 0/1 per line
    Groundtruth/AllLabels/Labels_<c>.txt                     one 0/1 per line
    Flickr/<dir>/<NNNN>_<flickrid>.jpg
    synthetic_meta.json                         parameters, noise rates, summary (twin only)

Run ``python -m datamodules.synthetic.nuswide --root R [--num-images N --seed S --image-size P]``.

:func:`write_scale_twin` writes the same files at the real release's size (161,789 + 107,859 listed
images) with every image a hard link to one of a few small JPEGs: the reader's speed and memory at
full size, without the pixels (``python -m experiments.bench scale``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.nuswide import INDEX_FILENAME
from datamodules.synthetic.cache import META_FILE, ensure_written, require_empty, staged, write_meta
from datamodules.synthetic.world import (
    ConceptRegistry,
    build_vocabulary,
    render_scene,
    save_jpeg,
    zipf_weights,
)

CONCEPTS: tuple[str, ...] = (
    "airport", "animal", "beach", "bear", "birds", "boats", "book", "bridge", "buildings", "cars",
    "castle", "cat", "cityscape", "clouds", "computer", "coral", "cow", "dancing", "dog",
    "earthquake", "elk", "fire", "fish", "flags", "flowers", "food", "fox", "frost", "garden",
    "glacier", "grass", "harbor", "horses", "house", "lake", "leaf", "map", "military", "moon",
    "mountain", "nighttime", "ocean", "person", "plane", "plants", "police", "protest",
    "railroad", "rainbow", "reflection", "road", "rocks", "running", "sand", "sign", "sky",
    "snow", "soccer", "sports", "statue", "street", "sun", "sunset", "surf", "swimmers",
    "tattoo", "temple", "tiger", "tower", "town", "toy", "train", "tree", "valley", "vehicle",
    "water", "waterfall", "wedding", "whales", "window", "zebra",
)  # fmt: skip
"""The 81 NUS-WIDE concepts, in the release's (alphabetical) column order."""

NUM_TAGS = 1000
IMAGE_DIR = "Flickr"

_GENERATOR = "nuswide-synthetic"
_VERSION = 1
_WORLD_SEED = 0
"""Seed of the concept -> glyph assignment and of the vocabulary: one world for every data seed."""
MAX_LABELS = 6

# Most to least frequently *chosen* concept (parents also gain frequency from their children).
_POPULARITY: tuple[str, ...] = (
    "person", "clouds", "water", "animal", "sky", "grass", "buildings", "window", "plants",
    "lake", "ocean", "road", "flowers", "sunset", "reflection", "rocks", "vehicle", "snow",
    "tree", "beach", "mountain", "birds", "cars", "street", "boats", "nighttime", "sand",
    "garden", "dog", "house", "sun", "cityscape", "town", "statue", "temple", "bridge", "food",
    "sports", "leaf", "cat", "toy", "harbor", "sign", "flags", "railroad", "train", "castle",
    "tower", "valley", "dancing", "fish", "horses", "plane", "wedding", "military", "frost",
    "moon", "police", "airport", "fire", "waterfall", "surf", "swimmers", "rainbow", "running",
    "coral", "cow", "tattoo", "glacier", "bear", "soccer", "zebra", "protest", "book",
    "computer", "elk", "tiger", "whales", "fox", "map", "earthquake",
)  # fmt: skip
_POPULARITY_EXPONENT = 0.9
_PRIMARY_COUNT_PROBS = (0.5, 0.3, 0.14, 0.06)
"""Probability of choosing 1, 2, 3 or 4 concepts before adding implied parents."""

_ELEMENTS: dict[str, str] = {
    "sky": "sky",
    "clouds": "clouds",
    "sunset": "sunset",
    "nighttime": "night",
    "water": "water",
    "grass": "grass",
    "sand": "sand",
    "snow": "snow",
}
"""Scene concepts, drawn as background elements instead of glyphs."""
_GROUNDS = frozenset(c for c, e in _ELEMENTS.items() if e in ("water", "grass", "sand", "snow"))

_ANIMALS = ("bear", "birds", "cat", "cow", "dog", "elk", "fish", "fox", "horses", "tiger")
_IMPLIES: dict[str, tuple[tuple[str, float], ...]] = {
    **{a: (("animal", 1.0),) for a in _ANIMALS},
    "zebra": (("animal", 1.0), ("grass", 0.5)),
    "whales": (("animal", 1.0), ("ocean", 1.0)),
    "ocean": (("water", 1.0),),
    "lake": (("water", 1.0),),
    "waterfall": (("water", 1.0), ("rocks", 0.4)),
    "harbor": (("water", 1.0), ("boats", 0.6)),
    "boats": (("water", 0.8),),
    "surf": (("ocean", 1.0), ("sports", 0.5)),
    "swimmers": (("water", 1.0), ("person", 1.0)),
    "coral": (("ocean", 1.0),),
    "beach": (("sand", 1.0), ("water", 0.7)),
    "reflection": (("water", 0.5),),
    "clouds": (("sky", 1.0),),
    "sunset": (("sky", 1.0),),
    "rainbow": (("sky", 1.0),),
    "plane": (("sky", 0.7), ("vehicle", 0.5)),
    "sun": (("sky", 1.0),),
    "moon": (("nighttime", 0.7),),
    "cars": (("vehicle", 1.0), ("road", 0.4)),
    "train": (("vehicle", 1.0), ("railroad", 0.5)),
    "street": (("road", 0.5),),
    "soccer": (("sports", 1.0), ("grass", 1.0)),
    "running": (("sports", 1.0), ("person", 1.0)),
    "dancing": (("person", 1.0),),
    "wedding": (("person", 1.0),),
    "protest": (("person", 1.0), ("sign", 0.5)),
    "military": (("person", 0.8),),
    "police": (("person", 0.8),),
    "tattoo": (("person", 1.0),),
    "flowers": (("plants", 1.0),),
    "leaf": (("plants", 1.0),),
    "garden": (("plants", 1.0), ("grass", 0.6)),
    "tree": (("plants", 0.5),),
    "castle": (("buildings", 1.0),),
    "temple": (("buildings", 1.0),),
    "tower": (("buildings", 1.0),),
    "house": (("buildings", 1.0),),
    "cityscape": (("buildings", 1.0),),
    "town": (("buildings", 1.0),),
    "glacier": (("snow", 1.0),),
    "frost": (("snow", 0.5),),
    "mountain": (("sky", 0.5),),
    "earthquake": (("buildings", 0.5),),
}
"""Child -> (parent, probability): parents added after the children are drawn."""

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "airport": ("terminal", "runway"), "animal": ("animals", "wildlife"),
    "beach": ("seaside", "shore"), "bear": ("grizzly", "polarbear"), "birds": ("bird", "seagull"),
    "boats": ("boat", "sailboat"), "book": ("books", "library"), "bridge": ("bridges",),
    "buildings": ("building", "architecture"), "cars": ("car", "auto"), "castle": ("fortress",),
    "cat": ("kitten", "cats"), "cityscape": ("skyline", "downtown"), "clouds": ("cloud", "cloudy"),
    "computer": ("laptop",), "coral": ("reef",), "cow": ("cows", "cattle"),
    "dancing": ("dance", "dancer"), "dog": ("puppy", "dogs"), "earthquake": ("quake", "rubble"),
    "elk": ("deer", "antlers"), "fire": ("flames",), "fish": ("aquarium",), "flags": ("flag",),
    "flowers": ("flower", "bloom"), "food": ("dinner", "yummy"), "fox": ("redfox",),
    "frost": ("frozen", "ice"), "garden": ("gardens",), "glacier": ("iceberg",),
    "grass": ("meadow", "lawn"), "harbor": ("harbour", "port"), "horses": ("horse", "pony"),
    "house": ("home", "cottage"), "lake": ("pond",), "leaf": ("leaves", "foliage"),
    "map": ("maps",), "military": ("army", "soldier"), "moon": ("fullmoon",),
    "mountain": ("mountains", "peak"), "nighttime": ("night", "nightshot"),
    "ocean": ("sea", "waves"), "person": ("people", "portrait"), "plane": ("airplane", "aircraft"),
    "plants": ("plant", "botanical"), "police": ("cop",), "protest": ("demonstration", "rally"),
    "railroad": ("railway", "tracks"), "rainbow": (), "reflection": ("reflections", "mirror"),
    "road": ("highway",), "rocks": ("rock", "stone"), "running": ("marathon", "runner"),
    "sand": ("dunes",), "sign": ("signs", "signage"), "sky": ("bluesky",),
    "snow": ("snowy", "winter"), "soccer": ("football",), "sports": ("sport", "game"),
    "statue": ("sculpture", "monument"), "street": ("streets", "alley"),
    "sun": ("sunshine", "sunny"), "sunset": ("dusk", "sundown"), "surf": ("surfing", "surfer"),
    "swimmers": ("swimming", "pool"), "tattoo": ("tattoos", "ink"), "temple": ("shrine",),
    "tiger": ("tigers",), "tower": ("towers",), "town": ("village",), "toy": ("toys", "lego"),
    "train": ("trains", "locomotive"), "tree": ("trees", "forest"), "valley": ("canyon",),
    "vehicle": ("truck", "bus"), "water": ("splash",), "waterfall": ("falls", "cascade"),
    "wedding": ("bride", "groom"), "whales": ("whale",), "window": ("windows",),
    "zebra": ("zebras", "stripes"),
}  # fmt: skip
"""User-tag words of each concept besides its own name."""


@dataclass(frozen=True)
class NoiseRates:
    """How user tags and distractors are drawn (recorded in ``synthetic_meta.json``)."""

    concept_tag_prob: float = 0.6
    """A true concept is tagged (with its name, or one of its words) with this probability."""
    name_word_prob: float = 0.6
    """A concept's tag is its own name with this probability, else a random one of its words."""
    extra_word_prob: float = 0.3
    """A tagged concept gets a second of its words with this probability."""
    wrong_concept_prob: float = 0.05
    """Per image: probability that a (popularity-weighted) absent concept is tagged."""
    filler_mean: float = 3.5
    """Mean number of irrelevant filler tags (at least one) on a tagged image, Zipf-distributed."""
    distractor_prob: float = 0.3
    """Per image, twice: probability of drawing an unlabelled distractor glyph."""


@dataclass(frozen=True)
class _Sample:
    """One generated image: list entry, folder (query word) and counter in it, labels, tag words."""

    path: str
    folder: str
    counter: int
    labels: frozenset[str]
    words: tuple[int, ...]


class _TwinModel:
    """Draws the labels, tags and scene of one image; the world is fixed, only ``rng`` varies."""

    def __init__(self, noise: NoiseRates) -> None:
        self.noise = noise
        ranks = {c: r for r, c in enumerate(_POPULARITY)}
        self.popularity = zipf_weights(len(CONCEPTS), _POPULARITY_EXPONENT)[[ranks[c] for c in CONCEPTS]]
        self.registry = ConceptRegistry.build(CONCEPTS, _ELEMENTS, seed=_WORLD_SEED)
        concept_words = [(c, *_SYNONYMS[c]) for c in CONCEPTS]
        reserved = [w for words in concept_words for w in words]
        if len(set(reserved)) != len(reserved):
            raise ValueError("every concept tag word must belong to a single concept")
        self.vocabulary = build_vocabulary(reserved, NUM_TAGS, seed=_WORLD_SEED)
        word_id = {w: i for i, w in enumerate(self.vocabulary)}
        self.concept_words = {c: [word_id[w] for w in ws] for c, ws in zip(CONCEPTS, concept_words)}
        self.first_filler = len(reserved)
        self.filler_weights = zipf_weights(NUM_TAGS - self.first_filler)

    def labels(self, rng: np.random.Generator) -> tuple[str, frozenset[str]]:
        """Main concept (the Flickr query word) and the full label set of one image."""
        while True:
            count = rng.choice(len(_PRIMARY_COUNT_PROBS), p=_PRIMARY_COUNT_PROBS) + 1
            chosen = rng.choice(len(CONCEPTS), size=count, replace=False, p=self.popularity)
            primary = [CONCEPTS[i] for i in chosen]
            labels = _with_parents(primary, rng)
            if _drawable(labels):
                return primary[0], labels

    def tags(self, rng: np.random.Generator, labels: frozenset[str]) -> tuple[int, ...]:
        """Noisy user tags (vocabulary ids in build order) for an image showing ``labels``."""
        noise = self.noise
        words: set[int] = set()
        for concept in sorted(labels):
            if rng.random() < noise.concept_tag_prob:
                words.add(self._concept_word(rng, concept))
                if rng.random() < noise.extra_word_prob:
                    words.add(self._concept_word(rng, concept))
        if rng.random() < noise.wrong_concept_prob:
            wrong = CONCEPTS[rng.choice(len(CONCEPTS), p=self.popularity)]
            if wrong not in labels:
                words.add(self._concept_word(rng, wrong))
        fillers = 1 + rng.poisson(noise.filler_mean - 1)
        picked = rng.choice(len(self.filler_weights), fillers, replace=False, p=self.filler_weights)
        words.update(self.first_filler + int(i) for i in picked)
        return tuple(sorted(words))

    def _concept_word(self, rng: np.random.Generator, concept: str) -> int:
        ids = self.concept_words[concept]
        return ids[0] if rng.random() < self.noise.name_word_prob else ids[rng.integers(len(ids))]


def _with_parents(primary: Sequence[str], rng: np.random.Generator) -> frozenset[str]:
    """Close a set of concepts under :data:`_IMPLIES` (each implication drawn once)."""
    labels, queue = set(primary), list(primary)
    while queue:
        for parent, prob in _IMPLIES.get(queue.pop(0), ()):
            if parent not in labels and rng.random() < prob:
                labels.add(parent)
                queue.append(parent)
    return frozenset(labels)


def _drawable(labels: frozenset[str]) -> bool:
    """Whether one picture can show ``labels``: few enough, no sunset at night, <= 2 grounds."""
    return len(labels) <= MAX_LABELS and not {"sunset", "nighttime"} <= labels and len(labels & _GROUNDS) <= 2


# --------------------------------------------------------------------------------------------
# Writing the release
# --------------------------------------------------------------------------------------------


def _params(
    num_images: int, image_size: int, seed: int, test_fraction: float, untagged_fraction: float
) -> dict[str, Any]:
    if num_images < 2:
        raise ValueError(f"num_images must be >= 2, got {num_images}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0.0 <= untagged_fraction < 1.0:
        raise ValueError(f"untagged_fraction must be in [0, 1), got {untagged_fraction}")
    return {
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "untagged_fraction": float(untagged_fraction),
    }


def _flickr_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct 9-10 digit ids in random order (increasing steps, then shuffled)."""
    max_step = max(2, 8_000_000_000 // count)
    ids = 100_000_000 + np.cumsum(rng.integers(1, max_step, size=count))
    return rng.permutation(ids)


def _crlf(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode("ascii")


def _format_rows(matrix: np.ndarray, sep: bytes) -> bytes:
    """0/1 matrix as text: each value followed by ``sep`` (may be empty), rows ended by CRLF."""
    rows, cols = matrix.shape
    step = 1 + len(sep)
    out = np.empty((rows, cols * step + 2), dtype=np.uint8)
    out[:, 0 : cols * step : step] = matrix.astype(np.uint8) + ord("0")
    if sep:
        out[:, 1 : cols * step : step] = sep[0]
    out[:, -2:] = (ord("\r"), ord("\n"))
    return out.tobytes()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_matrix(path: Path, matrix: np.ndarray, sep: bytes, rows: np.ndarray | None = None) -> None:
    """Write ``matrix[rows]`` (all rows by default) as :func:`_format_rows` text, a block of rows at a
    time (the full-size tag matrices are 0.5 GB of text)."""
    rows = np.arange(len(matrix)) if rows is None else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    block = max(1, (1 << 24) // max(1, matrix.shape[1] * (1 + len(sep))))
    with open(path, "wb") as f:
        for start in range(0, len(rows), block):
            f.write(_format_rows(matrix[rows[start : start + block]], sep))


def _write_text_files(
    root: Path,
    image_list: list[str],
    is_test: np.ndarray,
    labels: np.ndarray,
    tags: np.ndarray,
    taglist: list[str],
) -> None:
    """Write every text file of the release; rows follow ``image_list`` order."""
    splits = {"Train": np.flatnonzero(~is_test), "Test": np.flatnonzero(is_test)}
    _write(root / "ConceptsList" / "Concepts81.txt", _crlf(CONCEPTS))
    _write(root / "NUS_WID_Tags" / "TagList1k.txt", _crlf(taglist))
    _write_matrix(root / "NUS_WID_Tags" / "AllTags1k.txt", tags, b"\t")
    _write(root / "ImageList" / "Imagelist.txt", _crlf(image_list))
    for split, rows in splits.items():
        _write(root / "ImageList" / f"{split}Imagelist.txt", _crlf([image_list[i] for i in rows]))
        _write_matrix(root / "NUS_WID_Tags" / f"{split}_Tags1k.dat", tags, b"\t", rows)
        _write_matrix(root / "NUS_WID_Tags" / f"{split}_Tags81.txt", labels, b" ", rows)
    for j, concept in enumerate(CONCEPTS):
        column = labels[:, j : j + 1]
        _write(root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt", _format_rows(column, b""))
        for split, rows in splits.items():
            name = f"Labels_{concept}_{split}.txt"
            _write(root / "Groundtruth" / "TrainTestLabels" / name, _format_rows(column[rows], b""))


def _summary(samples: list[_Sample], is_test: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    untagged = np.array([not s.words for s in samples])
    per_image = labels.sum(axis=1)
    tagged_words = [len(s.words) for s in samples if s.words]
    return {
        "num_images": len(samples),
        "num_train": int((~is_test).sum()),
        "num_test": int(is_test.sum()),
        "untagged": {
            "train": int((untagged & ~is_test).sum()),
            "test": int((untagged & is_test).sum()),
            "total": int(untagged.sum()),
        },
        "labels_per_image": {
            "min": int(per_image.min()),
            "max": int(per_image.max()),
            "mean": round(float(per_image.mean()), 4),
        },
        "tags_per_tagged_image_mean": round(float(np.mean(tagged_words)), 4) if tagged_words else 0.0,
        "concept_counts": {c: int(n) for c, n in zip(CONCEPTS, labels.sum(axis=0))},
    }


def _write_images(
    image_root: Path, model: _TwinModel, params: dict[str, Any], flickr_ids: np.ndarray
) -> list[_Sample]:
    """Draw every image (one seeded stream per image), write its JPEG, return the samples."""
    samples: list[_Sample] = []
    counters: Counter[str] = Counter()
    for i, flickr_id in enumerate(flickr_ids):
        rng = np.random.default_rng([params["seed"], i])
        folder, labels = model.labels(rng)
        untagged = rng.random() < params["untagged_fraction"]
        words = () if untagged else model.tags(rng, labels)
        scene = model.registry.scene(sorted(labels), rng, distractor_prob=model.noise.distractor_prob)
        counters[folder] += 1
        name = f"{counters[folder]:04d}_{flickr_id}.jpg"
        (image_root / folder).mkdir(parents=True, exist_ok=True)
        save_jpeg(render_scene(scene, params["image_size"], rng), image_root / folder / name)
        samples.append(_Sample(f"{folder}\\{name}", folder, counters[folder], labels, words))
    return samples


def _tag_matrix(samples: Sequence[_Sample], vocabulary: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Tag rows of ``samples`` with columns sorted by decreasing frequency, and the column names."""
    word_counts = Counter(w for s in samples for w in s.words)
    columns = sorted(range(len(vocabulary)), key=lambda w: (-word_counts[w], w))
    column_of = np.argsort(columns)
    matrix = np.zeros((len(samples), len(vocabulary)), dtype=np.uint8)
    for row, sample in enumerate(samples):
        matrix[row, column_of[list(sample.words)]] = 1
    return matrix, [vocabulary[w] for w in columns]


def write_nuswide(
    root: str | Path,
    *,
    num_images: int = 3000,
    image_size: int = 64,
    seed: int = 0,
    test_fraction: float = 0.4,
    untagged_fraction: float = 0.03,
) -> dict[str, Any]:
    """Write a synthetic NUS-WIDE release under ``root`` and return its summary.

    The same arguments give the same bytes. ``test_fraction`` of the images form the official
    test split; ``untagged_fraction`` of them (on average) carry no user tag. The summary (also
    stored with the parameters and the noise rates in ``root/synthetic_meta.json``) holds the split
    sizes, untagged counts per split, labels per image and per-concept image counts.
    """
    params = _params(num_images, image_size, seed, test_fraction, untagged_fraction)
    root = Path(root)
    require_empty(root, "write_nuswide")
    noise = NoiseRates()
    model = _TwinModel(noise)
    global_rng = np.random.default_rng(seed)
    flickr_ids = _flickr_ids(global_rng, num_images)
    test_flags = global_rng.permutation(num_images) < round(test_fraction * num_images)
    samples = _write_images(root / IMAGE_DIR, model, params, flickr_ids)

    order = sorted(range(num_images), key=lambda k: (samples[k].folder, samples[k].counter))
    samples = [samples[k] for k in order]
    is_test = test_flags[order]
    label_matrix = np.array([[c in s.labels for c in CONCEPTS] for s in samples], dtype=np.uint8)
    tag_matrix, taglist = _tag_matrix(samples, model.vocabulary)
    _write_text_files(root, [s.path for s in samples], is_test, label_matrix, tag_matrix, taglist)

    summary = _summary(samples, is_test, label_matrix)
    record = {"noise": {**asdict(noise), "untagged_fraction": untagged_fraction}, "summary": summary}
    write_meta(root, _GENERATOR, _VERSION, params, record, indent=2, sort_keys=True)
    return summary


# --------------------------------------------------------------------------------------------
# Scale twin: the release's metadata at the real size
# --------------------------------------------------------------------------------------------

REAL_SPLIT_SIZES = {"train": 161_789, "test": 107_859}
"""Rows of the official image lists (the release's README: 161,789 train / 107,859 test)."""
SCALE_IMAGES_DIR = "scale_twin_images"
"""Folder (under the root) of the few real JPEGs every listed image of a scale twin links to."""
_SCALE_GENERATOR = "nuswide-scale-twin"
_SCALE_BASE_IMAGES = 15
_SCALE_IMAGE_SIZE = 64


@dataclass(frozen=True)
class ScaleDropRates:
    """Shares of the listed images of a scale twin that the reader drops, drawn independently.

    The seed keeps 121,962 of 161,789 train and 81,636 of 107,859 test images (Table 4.1): ~75 %.
    It does not say how the drops split among the reasons; these rates (kept share
    0.96 x 0.80 x 0.99 x 0.9995 = 0.76) are an assumption that gives every filter work at its scale.
    """

    unlabeled: float = 0.20
    """No concept label (the twin's model always draws one: these rows have their labels cleared)."""
    untagged: float = 0.04
    """No user tag."""
    missing: float = 0.01
    """Listed but absent from the image folder (photos gone from Flickr)."""
    unreadable: float = 0.0005
    """Present but cut short (a JPEG without its end-of-image marker)."""


def _draw_labels_many(model: _TwinModel, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The twin's label model for ``n`` images at once: ``(main concept index [n], labels bool [n, C])``.

    As :meth:`_TwinModel.labels`: 1-4 concepts without replacement by popularity (Gumbel top-k),
    parents added through :data:`_IMPLIES` (each implication drawn once, when its child appears),
    undrawable sets drawn again.
    """
    col = {c: j for j, c in enumerate(CONCEPTS)}
    log_popularity = np.log(model.popularity)
    most = len(_PRIMARY_COUNT_PROBS)
    primary = np.empty(n, dtype=np.int64)
    labels = np.zeros((n, len(CONCEPTS)), dtype=bool)
    todo = np.arange(n)
    while len(todo):
        m = len(todo)
        count = rng.choice(most, size=m, p=_PRIMARY_COUNT_PROBS) + 1
        top = np.argsort(-(log_popularity + rng.gumbel(size=(m, len(CONCEPTS)))), axis=1)[:, :most]
        chosen = np.zeros((m, len(CONCEPTS)), dtype=bool)
        chosen[np.repeat(np.arange(m), count), top[np.arange(most) < count[:, None]]] = True
        new = chosen.copy()
        while new.any():
            added = np.zeros_like(chosen)
            for child, parents in _IMPLIES.items():
                appeared = new[:, col[child]]
                for parent, prob in parents:
                    added[:, col[parent]] |= appeared & ~chosen[:, col[parent]] & (rng.random(m) < prob)
            chosen |= added
            new = added
        grounds = chosen[:, [col[c] for c in _GROUNDS]].sum(axis=1)
        ok = (
            (chosen.sum(axis=1) <= MAX_LABELS)
            & ~(chosen[:, col["sunset"]] & chosen[:, col["nighttime"]])
            & (grounds <= 2)
        )
        primary[todo[ok]] = top[ok, 0]
        labels[todo[ok]] = chosen[ok]
        todo = todo[~ok]
    return primary, labels


def _draw_tags_many(model: _TwinModel, rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """The twin's tag model for many images at once: bool ``[n, NUM_TAGS]`` in vocabulary build order.

    As :meth:`_TwinModel.tags` (a true concept tagged with its name or one of its words, sometimes a
    second word; now and then a wrong concept's word; Zipf filler tags), except that the fillers
    are drawn with replacement (a repeat collapses into one tag).
    """
    noise = model.noise
    n = len(labels)
    words = np.zeros((n, NUM_TAGS), dtype=bool)
    rows = np.arange(n)

    def add_concept_words(concept: str, where: np.ndarray) -> None:
        ids = np.asarray(model.concept_words[concept])
        pick = np.where(
            rng.random(len(where)) < noise.name_word_prob, 0, rng.integers(len(ids), size=len(where))
        )
        words[where, ids[pick]] = True

    for j, concept in enumerate(CONCEPTS):
        tagged = rows[labels[:, j] & (rng.random(n) < noise.concept_tag_prob)]
        add_concept_words(concept, tagged)
        add_concept_words(concept, tagged[rng.random(len(tagged)) < noise.extra_word_prob])
    wrong = rng.choice(len(CONCEPTS), size=n, p=model.popularity)
    slipped = (rng.random(n) < noise.wrong_concept_prob) & ~labels[rows, wrong]
    for j in np.unique(wrong[slipped]):
        add_concept_words(CONCEPTS[j], rows[slipped & (wrong == j)])
    fillers = 1 + rng.poisson(noise.filler_mean - 1, size=n)
    draws = rng.choice(len(model.filler_weights), size=(n, int(fillers.max())), p=model.filler_weights)
    used = np.arange(draws.shape[1]) < fillers[:, None]
    words[np.repeat(rows, fillers), model.first_filler + draws[used]] = True
    return words


def _write_scale_images(folder: Path, model: _TwinModel, rng: np.random.Generator) -> tuple[list[Path], Path]:
    """A few small JPEGs of twin scenes, and one cut short (no end-of-image marker)."""
    folder.mkdir(parents=True)
    _, label_sets = _draw_labels_many(model, rng, _SCALE_BASE_IMAGES)
    good = []
    for k, row in enumerate(label_sets):
        scene = model.registry.scene([c for c, on in zip(CONCEPTS, row) if on], rng)
        good.append(folder / f"scene_{k:02d}.jpg")
        save_jpeg(render_scene(scene, _SCALE_IMAGE_SIZE, rng), good[-1])
    damaged = folder / "cut_short.jpg"
    data = good[0].read_bytes()
    damaged.write_bytes(data[: len(data) * 3 // 5])
    return good, damaged


def write_scale_twin(root: str | Path, fraction: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Write the NUS-WIDE release's metadata at ``fraction`` x its real size under ``root`` (new).

    Every file the reader reads (and the release's other list, tag and label files) is written at
    ``fraction`` x the official 161,789 train / 107,859 test rows, with the twin's label and tag
    model (:func:`_draw_labels_many`, :func:`_draw_tags_many`) and the drops of
    :class:`ScaleDropRates`. Every image present is a hard link to one of a few 64 px JPEGs under
    ``root/scale_twin_images`` (one of them cut short: the unreadable ones), so the real reader runs
    at the real size without the pixels. Written into a sibling folder and renamed into place.

    Returns ``{"items": listed images, "overrides": [...], "experiment": "tagger_nuswide"}``: the
    overrides make ``conf/data/nuswide.yaml`` read the twin.
    """
    if not fraction > 0:
        raise ValueError(f"fraction must be positive, got {fraction}")
    root = Path(root)
    require_empty(root, "write_scale_twin")
    sizes = {split: max(2, round(size * fraction)) for split, size in REAL_SPLIT_SIZES.items()}
    n = sum(sizes.values())
    rates = ScaleDropRates()
    model = _TwinModel(NoiseRates())
    rng = np.random.default_rng([seed, n])
    primary, labels = _draw_labels_many(model, rng, n)
    labels[rng.random(n) < rates.unlabeled] = False
    words = _draw_tags_many(model, rng, labels)
    words[rng.random(n) < rates.untagged] = False
    flickr_ids = _flickr_ids(rng, n)
    is_test = rng.permutation(n) < sizes["test"]
    fate = rng.random(n)  # < missing: no file; < missing + unreadable: the cut-short JPEG

    # Release order: by folder (the main concept, alphabetical like CONCEPTS), then counter.
    order = np.argsort(primary, kind="stable")
    by_folder = primary[order]
    counters = np.arange(n) - np.searchsorted(by_folder, by_folder) + 1
    image_list = [
        f"{CONCEPTS[c]}\\{k:04d}_{flickr_ids[i]}.jpg" for c, k, i in zip(by_folder, counters, order)
    ]
    word_counts = words.sum(axis=0)
    columns = np.lexsort((np.arange(NUM_TAGS), -word_counts))  # most frequent first, like TagList1k
    taglist = [model.vocabulary[w] for w in columns]

    root.parent.mkdir(parents=True, exist_ok=True)
    with staged(root) as staging:
        _write_text_files(
            staging,
            image_list,
            is_test[order],
            labels[order].view(np.uint8),
            words[order][:, columns].view(np.uint8),
            taglist,
        )
        good, damaged = _write_scale_images(staging / SCALE_IMAGES_DIR, model, rng)
        source = rng.integers(len(good), size=n)
        missing = fate[order] < rates.missing
        unreadable = ~missing & (fate[order] < rates.missing + rates.unreadable)
        for folder in {CONCEPTS[c] for c in by_folder}:
            (staging / IMAGE_DIR / folder).mkdir(parents=True)
        for k, entry in enumerate(image_list):
            if not missing[k]:
                os.link(
                    damaged if unreadable[k] else good[source[k]],
                    staging / IMAGE_DIR / entry.replace("\\", "/"),
                )
        summary = {
            "num_images": n,
            "num_train": sizes["train"],
            "num_test": sizes["test"],
            "unlabeled": int((~labels.any(axis=1)).sum()),
            "untagged": int((~words.any(axis=1)).sum()),
            "missing": int(missing.sum()),
            "unreadable": int(unreadable.sum()),
            "labels_per_labelled_image_mean": round(float(labels.sum(axis=1)[labels.any(axis=1)].mean()), 4),
            "tags_per_tagged_image_mean": round(float(words.sum(axis=1)[words.any(axis=1)].mean()), 4),
        }
        params = {"fraction": fraction, "seed": seed}
        record = {"drop_rates": asdict(rates), "noise": asdict(model.noise), "summary": summary}
        write_meta(staging, _SCALE_GENERATOR, _VERSION, params, record, indent=2, sort_keys=True)
    return {
        "items": n,
        "overrides": [f"data.root={root}", f"data.index_path={root / INDEX_FILENAME}"],
        "experiment": "tagger_nuswide",
    }


# --------------------------------------------------------------------------------------------
# Idempotent generation
# --------------------------------------------------------------------------------------------


def ensure_nuswide(root: str | Path, **params: Any) -> Path:
    """Make sure ``root`` holds the synthetic NUS-WIDE twin for these :func:`write_nuswide` arguments;
    return ``root`` (generated once, atomically, under a lock: see :mod:`datamodules.synthetic.cache`)."""
    return ensure_written(
        root, write_nuswide, params, generator=_GENERATOR, version=_VERSION, what="twin", normalize=_params
    )


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write (or reuse) a synthetic NUS-WIDE twin and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path, help="folder of the twin")
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args(argv)
    root = ensure_nuswide(args.root, num_images=args.num_images, seed=args.seed, image_size=args.image_size)
    summary = json.loads((root / META_FILE).read_text())["summary"]
    print(json.dumps({"root": str(root), **summary}, indent=2))


if __name__ == "__main__":
    main()
