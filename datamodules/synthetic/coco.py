"""Synthetic twins of MS-COCO 2014 captions with the Karpathy split, in the real layout::

    <root>/annotations/captions_{train,val}2014.json   COCO format (info, images, licenses, annotations)
    <root>/{train,val}2014/COCO_<split>2014_%012d.jpg
    <root>/dataset_coco.json                           Karpathy format (images[].split, sentences, cocoid)

:func:`write_coco` is the twin the models learn on; :func:`write_scale_twin` writes the metadata at
the real sizes, every image a hard link to one of a few small JPEGs, so that the real reader runs
at scale without gigabytes of pixels.

**What the learning twin carries** (the design, fixed before any comparison was run; see
``docs/retrieval.md``). The seed's question is whether unpaired images and captions help retrieval
when only a share ``p`` of the training images keep their captions. On COCO the unpaired pool is far
larger than the pairs (at ``p = 0.1``, ~10K pairs next to ~100K unpaired images and their captions)
and both modalities are long-tailed, so the pool holds what the pairs never show:

* **Objects with a long tail.** Each picture shows 1-3 objects (COCO: 3.5 categories per image on
  average, Lin et al. 2014; three is what stays legible at 32 px) drawn from 168 object categories
  (every ``shape x colour`` glyph of :mod:`~datamodules.synthetic.world`) with Zipf frequencies
  (exponent ``object_zipf``): a few categories are in a large share of the images, most are rare
  (COCO's ``person`` is in about half of the images, its rarest categories in a fraction of a
  percent). With about 1,000 training images a rare category is in a handful of them; at ``p = 0.1``
  most rare categories appear in no pair, but in the unpaired pool.
* **Scenes**: a sky band (day or sunset, clouds), 0-2 ground textures, night; named in some captions.
* **Five independent captions** per image (COCO Captions: five annotators per image, Chen et al.
  2015): each annotator mentions the first (most salient) object and each other one with
  probability 0.75, names it with a word drawn from a long-tailed list of synonyms per colour and
  per shape (``red``, ``crimson``, ``scarlet``...; ``circle``, ``disc``, ``orb``...), drops the
  colour with probability ``colour_drop``, names the scene with probability 0.6, and uses one of
  several sentence frames and verbs.
* **An open vocabulary**: each caption carries 0-3 words that the picture does not ground, drawn
  with Zipf frequencies from ``filler_words`` made-up words (the rare descriptive words of real
  captions: ``verdant``, ``wreathed``...), so most word types are rare and the test captions hold
  words the training captions never had.
* Known noise, as in the real files: a few training images get 4 or 6 captions (the reader must
  handle and count them); trailing dots and spaces vary.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.coco import CAPTIONS_PER_IMAGE
from datamodules.synthetic.cache import ensure_generated, write_meta
from datamodules.synthetic.world import (
    GROUND_ELEMENTS,
    Glyph,
    Scene,
    glyph_palette,
    render_scene,
    save_jpeg,
    zipf_weights,
)

GENERATOR = "datamodules.synthetic.coco"
VERSION = 2

#: Words for each colour and shape, most common first (drawn with Zipf weights 1, 1/2, 1/3...).
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet", "cherry"),
    "orange": ("orange", "amber", "tangerine"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "cyan": ("cyan", "turquoise", "aqua", "teal"),
    "blue": ("blue", "navy", "cobalt", "azure"),
    "purple": ("purple", "violet", "plum"),
    "magenta": ("magenta", "fuchsia", "cerise"),
    "white": ("white", "ivory", "pale"),
    "black": ("black", "dark", "ebony", "jet"),
    "brown": ("brown", "chocolate", "bronze", "tan"),
    "pink": ("pink", "rose", "salmon"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "dot", "orb"),
    "square": ("square", "box", "block", "tile"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "plus": ("plus", "cross", "plus sign"),
    "saltire": ("saltire", "x shape", "diagonal cross"),
    "ring": ("ring", "donut", "hoop", "loop"),
    "star": ("star", "starburst", "spiky star"),
    "hbar": ("bar", "dash", "stripe", "horizontal bar"),
    "vbar": ("pillar", "post", "column", "vertical bar"),
    "crescent": ("crescent", "moon", "sickle"),
    "hexagon": ("hexagon", "hex", "honeycomb cell"),
    "tee": ("tee", "t shape", "t bar"),
    "chevron": ("chevron", "arrowhead", "caret"),
}
SCENE_WORDS: dict[str | None, tuple[str, ...]] = {
    None: ("on a plain background", "indoors", "against a wall"),
    "water": ("on the water", "above the sea", "by the lake", "in the ocean"),
    "grass": ("on the grass", "in a green field", "on a lawn", "in a meadow"),
    "sand": ("on the sand", "on a beach", "in the desert", "on the dunes"),
    "snow": ("in the snow", "on a snowy ground", "in a winter scene"),
    "sky": ("under a blue sky", "with the sky above", "below a clear sky"),
    "sunset": ("at sunset", "at dusk", "in the evening glow"),
    "clouds": ("with clouds", "under a cloudy sky", "with clouds overhead"),
    "night": ("at night", "in the dark", "under the stars"),
}
VERBS = ("", "", "sitting", "lying", "floating", "resting", "shown", "placed")
FRAMES = (
    "a {objects} {verb} {where}",
    "there is a {objects} {where}",
    "a picture of a {objects} {verb} {where}",
    "{where} a {objects} {verb}",
    "an image showing a {objects} {where}",
    "a close up of a {objects} {verb} {where}",
    "a {objects}",
)
_WORD = re.compile(r"[a-z0-9]+")  # Karpathy's tokens: lower case, no punctuation
_SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ren",
    "sa",
    "tor",
    "vel",
    "du",
    "ish",
    "pra",
    "no",
    "quel",
    "zim",
    "bo",
    "ter",
)


def made_up_words(n: int, seed: int) -> list[str]:
    """``n`` distinct pronounceable made-up words (2-4 syllables), in a seeded order."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        k = int(rng.integers(2, 5))
        words["".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=k))] = None
    return list(words)


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.choice(len(words), p=zipf_weights(len(words), 1.0)))]


def _describe(
    rng: np.random.Generator,
    glyphs: Sequence[Glyph],
    elements: frozenset[str],
    colour_drop: float,
    fillers: Sequence[str],
    filler_p: np.ndarray,
) -> str:
    """One annotator's caption of a picture (see the module doc)."""
    mentioned = [glyphs[0], *(g for g in glyphs[1:] if rng.random() < 0.75)]
    order = rng.permutation(len(mentioned))
    names = []
    for k in order:
        glyph = mentioned[int(k)]
        shape = _pick(rng, SHAPE_WORDS[glyph.shape])
        names.append(
            shape if rng.random() < colour_drop else f"{_pick(rng, COLOUR_WORDS[glyph.colour])} {shape}"
        )
    objects = " and a ".join(names)
    where = ""
    if rng.random() < 0.6:
        grounds = [e for e in GROUND_ELEMENTS if e in elements]
        sky = [e for e in ("night", "sunset", "clouds", "sky") if e in elements]
        choices = grounds + sky[:1] or [None]
        where = _pick(rng, SCENE_WORDS[choices[int(rng.integers(len(choices)))]])
    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    words = frame.format(objects=objects, verb=VERBS[int(rng.integers(len(VERBS)))], where=where).split()
    for _ in range(int(rng.choice(4, p=(0.35, 0.35, 0.2, 0.1)))):  # ungrounded words, long-tailed
        words.insert(int(rng.integers(1, len(words) + 1)), fillers[int(rng.choice(len(fillers), p=filler_p))])
    text = " ".join(words)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.7 else " ")  # real captions vary


def _scene(rng: np.random.Generator, palette: Sequence[Glyph], object_p: np.ndarray) -> Scene:
    count = 1 + int(rng.binomial(2, 0.4))
    picked = rng.choice(len(palette), size=count, replace=False, p=object_p)
    elements: set[str] = set()
    if rng.random() < 0.5:
        elements.add("sunset" if rng.random() < 0.15 else "sky")
        if rng.random() < 0.3:
            elements.add("clouds")
    grounds = int(rng.choice(3, p=(0.3, 0.55, 0.15)))
    elements.update(str(g) for g in rng.choice(GROUND_ELEMENTS, size=grounds, replace=False))
    if rng.random() < 0.1:
        elements.add("night")
    return Scene(frozenset(elements), tuple(palette[int(i)] for i in picked))


def _image_entry(file_name: str, cocoid: int, height: int, width: int) -> dict[str, Any]:
    """An ``images[]`` entry of a COCO captions file, with every field of the real one."""
    return {
        "license": 1 + cocoid % 8,
        "file_name": file_name,
        "coco_url": f"http://images.cocodataset.org/{file_name.split('_')[1]}/{file_name}",
        "height": height,
        "width": width,
        "date_captured": "2013-11-14 13:02:53",
        "flickr_url": f"http://farm4.staticflickr.com/{cocoid % 9000}/{cocoid}_0000000000_z.jpg",
        "id": cocoid,
    }


def _write_release(
    root: Path,
    folders: Sequence[str],
    entries: Sequence[dict[str, Any]],
    captions: Sequence[Sequence[str]],
    karpathy_split: Sequence[str],
    description: str,
) -> None:
    """Write the two COCO caption files and ``dataset_coco.json`` for images ``k`` in
    ``folders[k]`` (``train2014``/``val2014``) with ``entries[k]`` and ``captions[k]``, entry by
    entry (``json.dumps`` style, as the real files), so that a release at the real size never
    exists as one Python structure."""
    first_id = np.concatenate([[1], 1 + np.cumsum([len(c) for c in captions])]).tolist()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    info = {
        "description": description,
        "url": "",
        "version": "1.0",
        "year": 2014,
        "contributor": GENERATOR,
        "date_created": "2017/09/01",
    }
    licenses = [{"url": "", "id": i, "name": "synthetic"} for i in range(1, 9)]
    for folder in ("train2014", "val2014"):
        mine = [k for k, f in enumerate(folders) if f == folder]
        with open(root / "annotations" / f"captions_{folder}.json", "w") as f:
            f.write(f'{{"info": {json.dumps(info)}, "images": [')
            f.write(", ".join(json.dumps(entries[k]) for k in mine))
            f.write(f'], "licenses": {json.dumps(licenses)}, "annotations": [')
            f.write(
                ", ".join(
                    json.dumps({"image_id": entries[k]["id"], "id": first_id[k] + n, "caption": caption})
                    for k in mine
                    for n, caption in enumerate(captions[k])
                )
            )
            f.write("]}")
    with open(root / "dataset_coco.json", "w") as f:
        f.write('{"images": [')
        for k, (folder, entry, caps) in enumerate(zip(folders, entries, captions)):
            sentences = [
                {
                    "tokens": _WORD.findall(caption.lower()),
                    "raw": caption,
                    "imgid": k,
                    "sentid": first_id[k] + n,
                }
                for n, caption in enumerate(caps)
            ]
            record = {
                "filepath": folder,
                "sentids": [s["sentid"] for s in sentences],
                "filename": entry["file_name"],
                "imgid": k,
                "split": karpathy_split[k],
                "sentences": sentences,
                "cocoid": entry["id"],
            }
            f.write((", " if k else "") + json.dumps(record))
        f.write('], "dataset": "coco"}')


def write_coco(
    root: Path,
    num_images: int = 600,
    image_size: int = 32,
    seed: int = 0,
    test_images: int = 100,
    val_images: int = 50,
    colour_drop: float = 0.1,
    odd_caption_images: int = 4,
    object_zipf: float = 1.0,
    filler_words: int = 2000,
    filler_zipf: float = 1.0,
) -> dict[str, Any]:
    """Write the learning twin to ``root``: ``num_images`` images in all; the last ``val_images +
    test_images`` are in ``val2014`` and the Karpathy val/test splits, the rest in ``train2014`` /
    split train. Returns a summary (sizes, vocabulary statistics)."""
    rng = np.random.default_rng(seed)
    palette = glyph_palette(seed)  # rank order of the object categories' frequencies
    object_p = zipf_weights(len(palette), object_zipf)
    fillers = made_up_words(filler_words, seed + 1)
    filler_p = zipf_weights(filler_words, filler_zipf)
    num_eval = val_images + test_images
    folders, splits, entries, captions = [], [], [], []
    for k in range(num_images):
        folder = "val2014" if k >= num_images - num_eval else "train2014"
        splits.append(
            "train" if folder == "train2014" else ("val" if k < num_images - test_images else "test")
        )
        cocoid = 100000 + 7 * k
        scene = _scene(rng, palette, object_p)
        file_name = f"COCO_{folder}_{cocoid:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        save_jpeg(render_scene(scene, image_size, rng), root / folder / file_name)
        count = 5
        if folder == "train2014" and k < odd_caption_images:
            count = 4 if k % 2 == 0 else 6
        captions.append(
            [
                _describe(rng, scene.glyphs, scene.elements, colour_drop, fillers, filler_p)
                for _ in range(count)
            ]
        )
        folders.append(folder)
        entries.append(_image_entry(file_name, cocoid, image_size, image_size))
    _write_release(root, folders, entries, captions, splits, "COCO 2014 Dataset (synthetic twin)")
    words = [w for caps in captions for c in caps for w in c.lower().strip(" .").split()]
    counts = np.unique(words, return_counts=True)[1]
    return {
        "num_images": num_images,
        "odd_caption_images": odd_caption_images,
        "word_types": int(len(counts)),
        "words_per_caption": round(len(words) / sum(len(c) for c in captions), 2),
        "types_seen_under_5_times": round(float((counts < 5).mean()), 3),
    }


def ensure_coco(root: str | Path, **params: Any) -> Path:
    """Generate the learning twin into ``root`` unless it already holds it for the same parameters."""

    def write(folder: Path) -> None:
        write_meta(folder, GENERATOR, VERSION, params, {"summary": write_coco(folder, **params)}, end="")

    return ensure_generated(root, generator=GENERATOR, version=VERSION, params=params, write=write)


# ----------------------------------------------------------------------------- the scale twin
#: The real release: train2014 and val2014 images and captions (COCO 2014 captions files), and
#: Karpathy's split of them (train = all of train2014; val2014 = restval + 5,000 val + 5,000 test).
REAL_SIZES = {
    "train2014": {"images": 82_783, "captions": 414_113},
    "val2014": {"images": 40_504, "captions": 202_654},
    "karpathy_val": 5_000,
    "karpathy_test": 5_000,
}
SCALE_JPEGS = 16
SCALE_VOCABULARY = 25_000


def _scale_captions(rng: np.random.Generator, count: int, vocabulary: Sequence[str]) -> list[str]:
    """``count`` captions of 8-18 words (mean ~10.5, as COCO's) over a Zipf-distributed vocabulary."""
    lengths = np.clip(rng.poisson(10.5, size=count), 8, 18)
    words = rng.choice(len(vocabulary), size=int(lengths.sum()), p=zipf_weights(len(vocabulary), 1.0))
    cuts = np.cumsum(lengths)[:-1]
    out = []
    for k, ids in enumerate(np.split(words, cuts)):
        text = " ".join(vocabulary[int(i)] for i in ids)
        out.append(text[0].upper() + text[1:] + ("." if k % 3 else ". "))
    return out


def write_scale_twin(root: Path, fraction: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Write the COCO 2014 captions files and Karpathy's ``dataset_coco.json`` at ``fraction`` x the
    real sizes (123,287 images, 616,767 captions at 1.0; a few images with 6 captions, as in the real
    files), with every image path a hard link to one of :data:`SCALE_JPEGS` small JPEGs written once
    under ``root/_jpegs``. Returns ``{"items", "overrides", "experiment"}``: the images written, the
    overrides that point ``conf/data/coco.yaml`` at ``root``, and the real-data experiment."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sources = root / "_jpegs"
    sources.mkdir(parents=True, exist_ok=True)
    palette = glyph_palette(seed)
    jpegs = []
    for k in range(SCALE_JPEGS):
        path = sources / f"{k:02d}.jpg"
        if not path.exists():
            save_jpeg(render_scene(Scene(frozenset(), (palette[k],)), 64, rng), path)
        jpegs.append(path)
    vocabulary = made_up_words(SCALE_VOCABULARY, seed)
    eval_images = REAL_SIZES["karpathy_val"] + REAL_SIZES["karpathy_test"]
    sizes = {}
    for folder in ("train2014", "val2014"):
        real = REAL_SIZES[folder]
        extra = real["captions"] - CAPTIONS_PER_IMAGE * real["images"]  # images with a sixth caption
        sizes[folder] = {
            "images": max(1, round(fraction * real["images"])),
            "extra": max(1, round(fraction * extra)),
        }
    held_out = max(2, round(fraction * eval_images))
    ids = rng.choice(np.arange(1, 581_930), size=sum(s["images"] for s in sizes.values()), replace=False)
    folders, splits, entries, captions = [], [], [], []
    for folder, size in sizes.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        counts = np.full(size["images"], CAPTIONS_PER_IMAGE)
        counts[rng.choice(size["images"], size=min(size["extra"], size["images"]), replace=False)] += 1
        texts = iter(_scale_captions(rng, int(counts.sum()), vocabulary))
        start = len(entries)
        for k in range(size["images"]):
            cocoid = int(ids[start + k])
            file_name = f"COCO_{folder}_{cocoid:012d}.jpg"
            target = root / folder / file_name
            if not target.exists():
                os.link(jpegs[cocoid % SCALE_JPEGS], target)
            folders.append(folder)
            entries.append(_image_entry(file_name, cocoid, 480, 640))
            captions.append([next(texts) for _ in range(int(counts[k]))])
            if folder == "train2014":
                splits.append("train")
            else:  # val2014: the first held-out images are Karpathy's val and test, the rest restval
                splits.append("val" if k < held_out // 2 else "test" if k < held_out else "restval")
    _write_release(root, folders, entries, captions, splits, "COCO 2014 Dataset (scale twin)")
    return {
        "items": len(entries),
        "overrides": [f"data.root={root}", f"data.karpathy_split={root / 'dataset_coco.json'}"],
        "experiment": "retrieval_coco",
    }


def pair_coverage(root: str | Path, paired_fraction: float, pair_seed: int = 0) -> dict[str, float]:
    """What the unpaired pool holds that the pairs do not, for the training split of the release in
    ``root`` with ``paired_fraction`` of its images paired (as :class:`~datamodules.coco.CocoDataModule`
    picks them): the share of test captions with a word no paired caption has; the shares of the test
    captions' word tokens never seen in a paired caption, and of those the unpaired captions do hold;
    the share of the training captions' word types that only unpaired captions hold."""
    from collections import Counter

    from datamodules.coco import read_coco, split_pairs
    from datamodules.preprocessing.text import simple_tokens

    root = Path(root)
    splits, _ = read_coco(root, root / "dataset_coco.json", check_images=False)
    train = splits["train"]
    paired, pool, _ = split_pairs(len(train), paired_fraction, pair_seed)

    def words(images: Sequence[Any]) -> Counter:
        return Counter(w for image in images for c in image.captions for w in simple_tokens(c))

    in_pairs, in_pool = words([train[int(i)] for i in paired]), words([train[int(i)] for i in pool])
    test = words(splits["test"])
    total = sum(test.values())
    unseen = sum(n for w, n in test.items() if w not in in_pairs)
    pool_only = sum(n for w, n in test.items() if w not in in_pairs and w in in_pool)
    types = set(in_pairs) | set(in_pool)
    captions = [simple_tokens(c) for image in splits["test"] for c in image.captions]
    return {
        "test_captions_with_a_word_unseen_in_pairs": round(
            sum(any(w not in in_pairs for w in c) for c in captions) / len(captions), 4
        ),
        "test_tokens_unseen_in_pairs": round(unseen / total, 4),
        "test_tokens_only_in_unpaired": round(pool_only / total, 4),
        "train_types_only_in_unpaired": round(len(set(in_pool) - set(in_pairs)) / max(1, len(types)), 4),
    }
