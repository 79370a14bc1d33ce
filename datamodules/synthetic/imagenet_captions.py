"""Synthetic twin of ImageNet-Captions for the relevance filter (seed 000).

Writes, in the release's format (read by :mod:`datamodules.imagenet_captions.reader`)::

    imagenet_captions.json        JSON list of {filename, wnid, title, description, tags}
    class_descriptions.json       wnid -> list of 3-12 description sentences (the user's file)
    LOC_synset_mapping.txt        '<wnid> <names>' per line, for the classes used
    train/<wnid>/<filename>       one small JPEG per caption (a class glyph on a scene)
    planted_irrelevant.json       the known noise: {"irrelevant": [entry indices], "kinds": {index:
                                  kind}, "image": {index: "mislabelled" | "off_topic"}}
    synthetic_meta.json           generator, version, parameters (the completion marker)

Classes are real ImageNet classes (wnid = 'n' + 8-digit WordNet noun offset). A relevant caption
names its class (a name or synonym) and some of the class's cue words, which its description
sentences share. Class sizes are skewed (Zipf-like) so the small-class split guarantees matter.
Deterministic for the same parameters.

What the twin carries, and where the numbers come from (fixed before any comparison ran):

* **Captions unrelated to their image**: a share ``irrelevant_share`` (15 %) of the captions does
  not reveal the class: camera settings, dates, "my trip" (what seed 000 names as removed: camera
  descriptions, tags, other metadata), or text about *another* class. The seed gives no share; it
  keeps "28 610" of 389,598 captions after filtering, which as printed would drop 92.7 % and
  contradict its own account of the filter removing the noisiest items; read as 328,610 (a lost
  leading digit) it drops 15.7 %.
* **Images that do not show their class**: some items with such captions are also mislabelled (the
  image shows another class; for a caption about another class, that class) or off-topic (no class
  object at all): a share ``image_noise_irrelevant`` (1/3) of the irrelevant-caption items and
  ``image_noise_relevant`` (2 %) of the others, half mislabelled and half off-topic: about 6.7 % of
  all images, the order of the label errors estimated in ImageNet itself (about 6 % of its
  validation labels, Northcutt et al. 2021). A caption that says nothing about the picture marks
  a casual upload more often than a descriptive one does; the twin makes that link explicit, so a
  filter of captions has something to find on the image side too. Images are drawn from their own
  random stream: the captions do not depend on the image settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.files import atomic_write_text
from datamodules.synthetic.cache import ensure_written, write_meta
from datamodules.synthetic.world import Scene, glyph_palette, render_scene, save_jpeg, zipf_weights

GENERATOR = "imagenet_captions"
VERSION = 2

# (wnid, names as in LOC_synset_mapping.txt, cue words of the class's captions and description)
CLASSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("n01440764", "tench, Tinca tinca", ("freshwater", "angler", "olive", "scales", "pond")),
    ("n01443537", "goldfish, Carassius auratus", ("aquarium", "orange", "bowl", "fins", "pet")),
    ("n01491361", "tiger shark, Galeocerdo cuvieri", ("stripes", "predator", "reef", "teeth", "ocean")),
    ("n01518878", "ostrich, Struthio camelus", ("flightless", "savanna", "long neck", "eggs", "running")),
    ("n01855672", "goose", ("honking", "flock", "migration", "feathers", "lake")),
    (
        "n01882714",
        "koala, koala bear, Phascolarctos cinereus",
        ("eucalyptus", "marsupial", "Australia", "tree", "sleepy"),
    ),
    ("n01910747", "jellyfish", ("tentacles", "sting", "translucent", "medusa", "drifting")),
    ("n02007558", "flamingo", ("pink", "wading", "lagoon", "one leg", "shrimp")),
    ("n02056570", "king penguin, Aptenodytes patagonica", ("colony", "Antarctic", "tuxedo", "chick", "icy")),
    ("n02099601", "golden retriever", ("fetch", "puppy", "leash", "retrieving", "dog park")),
    ("n02123045", "tabby, tabby cat", ("whiskers", "purring", "kitten", "windowsill", "meow")),
    ("n02129165", "lion, king of beasts, Panthera leo", ("mane", "pride", "roar", "safari", "hunting")),
    ("n02132136", "brown bear, bruin, Ursus arctos", ("grizzly", "salmon", "hibernation", "claws", "forest")),
    ("n02165456", "ladybug, ladybird, lady beetle", ("spots", "beetle", "aphids", "red shell", "leaf")),
    (
        "n02279972",
        "monarch, monarch butterfly, Danaus plexippus",
        ("milkweed", "wings", "caterpillar", "orange veins", "migrating"),
    ),
    ("n02342885", "hamster", ("cage", "wheel", "cheek pouches", "rodent", "bedding")),
    ("n02391049", "zebra", ("black and white", "herd", "stripes", "grassland", "equine")),
    (
        "n02398521",
        "hippopotamus, hippo, river horse",
        ("river", "wallowing", "huge mouth", "semiaquatic", "tusks"),
    ),
    ("n02480495", "orangutan, orang, Pongo pygmaeus", ("ape", "Borneo", "rainforest", "red fur", "primate")),
    (
        "n02509815",
        "lesser panda, red panda, panda, cat bear, Ailurus fulgens",
        ("bamboo", "Himalayas", "ringed tail", "arboreal", "russet"),
    ),
    ("n02676566", "acoustic guitar", ("strings", "strumming", "chords", "fretboard", "folk song")),
    ("n02690373", "airliner", ("jet", "runway", "passengers", "airport", "takeoff")),
    ("n02814860", "beacon, lighthouse, beacon light, pharos", ("coast", "lamp", "cliff", "ships", "keeper")),
    ("n02951358", "canoe", ("paddle", "rowing", "lake trip", "wooden hull", "portage")),
    ("n04398044", "teapot", ("porcelain", "brewing", "spout", "afternoon tea", "kettle")),
    ("n04507155", "umbrella", ("rain", "canopy", "handle", "shower", "drizzle")),
    ("n07745940", "strawberry", ("berries", "sweet", "red fruit", "jam", "harvest")),
    ("n07753592", "banana", ("peel", "yellow", "bunch", "tropical fruit", "ripe")),
    ("n07873807", "pizza, pizza pie", ("cheese", "slice", "oven", "tomato sauce", "crust")),
    ("n09472597", "volcano", ("lava", "eruption", "crater", "ash cloud", "magma")),
    ("n11939491", "daisy", ("petals", "meadow", "white flower", "yellow centre", "bloom")),
)

_TITLES = ("{name}", "my {name}", "a {name} today", "{name} close up", "the {name}", "{name} and {cue}")
_DESCRIPTIONS = (
    "A {name} with {cue}.",
    "Saw this {name} near the {cue}.",
    "{cue} and {cue2}, a lovely {name}.",
    "Photo of a {name}: {cue}, {cue2}.",
    "Our {name}. {cue} everywhere.",
)
_SENTENCES = (
    "The {name} is known for its {cue}.",
    "A {name} is often seen with {cue} and {cue2}.",
    "Typical features of the {name} include {cue}.",
    "Many people associate the {name} with {cue}.",
    "In the wild or at home, the {name} shows {cue} and {cue2}.",
    "The {name} has been described by {cue} since early records.",
    "Observers of the {name} note its {cue}.",
    "The word {name} also evokes {cue}.",
)
# Planted noise: captions that do not reveal their class.
_IRRELEVANT = {
    "camera": (
        "IMG_{n}",
        "Canon EOS {n}D, f/{f}, 1/{s} s, ISO {iso}",
        "DSC{n}",
        "Nikon D{n} 50mm f/{f} ISO {iso}",
    ),
    "date": (
        "{day} March {year}",
        "Photo taken on {year}-0{m}-1{day}",
        "Scanned {day}/0{m}/{year}",
        "{year} archive",
    ),
    "trip": (
        "my trip",
        "Summer holidays {year} with friends",
        "Day {day} of our trip",
        "weekend away, {year}",
    ),
}


def _fill(template: str, rng: np.random.Generator, name: str, cues: tuple[str, ...]) -> str:
    cue, cue2 = rng.choice(len(cues), 2, replace=False)
    return template.format(
        name=name,
        cue=cues[cue],
        cue2=cues[cue2],
        n=int(rng.integers(100, 9999)),
        f=float(rng.choice([1.8, 2.8, 4.0, 5.6])),
        s=int(rng.choice([60, 125, 250, 1000])),
        iso=int(rng.choice([100, 400, 1600])),
        day=int(rng.integers(1, 9)),
        year=int(rng.integers(2004, 2012)),
        m=int(rng.integers(1, 9)),
    )


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def write_imagenet_captions(
    root: Path,
    *,
    num_classes: int = 30,
    num_captions: int = 1500,
    irrelevant_share: float = 0.15,
    image_noise_irrelevant: float = 1 / 3,
    image_noise_relevant: float = 0.02,
    image_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the twin into ``root`` (see the module docstring); returns the meta record."""
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    image_rng = np.random.default_rng([seed, 1])  # images and their noise: the captions never see it
    classes = CLASSES[:num_classes]
    names = {w: [n.strip() for n in names.split(",")] for w, names, _ in classes}
    cues = {w: c for w, _, c in classes}
    # skewed class sizes (the largest ~8x the smallest), every class at least 4 captions
    weights = 1.0 / (1.0 + np.arange(num_classes) / 4.0)
    sizes = np.maximum(4, np.round(weights / weights.sum() * num_captions)).astype(int)
    order = rng.permutation(num_classes)
    palette = glyph_palette(seed)
    entries, planted, image_noise = [], {}, {}
    for c in order:
        wnid = classes[c][0]
        for k in range(sizes[c]):
            index = len(entries)
            name = str(rng.choice(names[wnid][:3]))
            shown = c  # the class the image shows (None: no class object)
            # the templates of the title and the description, and the name and cues that fill them
            choices, subject = (_TITLES, _DESCRIPTIONS), (name, cues[wnid])
            if rng.random() < irrelevant_share:
                kind = str(rng.choice(["camera", "date", "trip", "other_class"]))
                planted[index] = kind
                if kind == "other_class":
                    other_c = (c + 1 + int(rng.integers(num_classes - 1))) % num_classes
                    other = classes[other_c][0]
                    subject = (names[other][0], cues[other])
                else:
                    choices = (_IRRELEVANT[kind], _IRRELEVANT[kind])
            title, description = (_fill(str(rng.choice(t)), rng, *subject) for t in choices)
            # a few captions of one word only (the seed's >1-word filter drops them)
            if rng.random() < 0.04:
                title, description = name.split()[0], ""
            noise = image_noise_irrelevant if index in planted else image_noise_relevant
            if image_rng.random() < noise:
                if image_rng.random() < 0.5:
                    image_noise[index] = "mislabelled"
                    shown = (
                        other_c
                        if planted.get(index) == "other_class"
                        else (c + 1 + int(image_rng.integers(num_classes - 1))) % num_classes
                    )
                else:
                    image_noise[index], shown = "off_topic", None
            filename = f"{wnid}_{10000 + k}.JPEG"
            entries.append(
                {
                    "filename": filename,
                    "wnid": wnid,
                    "title": _capitalise(title),
                    "description": description,
                    "tags": [name, str(rng.choice(cues[wnid]))],
                }
            )
            folder = root / "train" / wnid
            folder.mkdir(parents=True, exist_ok=True)
            glyphs = (palette[shown],) if shown is not None else ()
            save_jpeg(render_scene(Scene(glyphs=glyphs), image_size, image_rng), folder / filename)
    descriptions = {}
    for wnid, _, _ in classes:
        count = int(rng.integers(3, 13))
        templates = [
            _SENTENCES[i % len(_SENTENCES)] for i in rng.permutation(max(count, len(_SENTENCES)))[:count]
        ]
        descriptions[wnid] = [_capitalise(_fill(t, rng, names[wnid][0], cues[wnid])) for t in templates]
    (root / "imagenet_captions.json").write_text(json.dumps(entries, indent=1))
    (root / "class_descriptions.json").write_text(json.dumps(descriptions, indent=1))
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n, _ in classes))
    (root / "planted_irrelevant.json").write_text(
        json.dumps(
            {
                "irrelevant": sorted(planted),
                "kinds": {str(k): v for k, v in planted.items()},
                "image": {str(k): v for k, v in sorted(image_noise.items())},
            }
        )
    )
    params = {
        "num_classes": num_classes,
        "num_captions": num_captions,
        "irrelevant_share": irrelevant_share,
        "image_noise_irrelevant": image_noise_irrelevant,
        "image_noise_relevant": image_noise_relevant,
        "image_size": image_size,
        "seed": seed,
    }
    record = {"captions": len(entries), "planted_irrelevant": len(planted), "image_noise": len(image_noise)}
    return write_meta(root, GENERATOR, VERSION, params, record, indent=2, end="")


def ensure_imagenet_captions(root: str | Path, **params: Any) -> Path:
    """Generate the twin into ``root`` once (atomic, locked; regenerated when ``params`` change)."""
    return ensure_written(
        root, write_imagenet_captions, params, generator=GENERATOR, version=VERSION, what="twin"
    )


# ------------------------------------------------------------------------------ the scale twin
#: The release's size (Fang et al. 2022: ~464k ImageNet training images with their Flickr text) and
#: seed 000's counts of it: 445,984 entries with a title or a description, 389,598 of them with
#: more than one word (the captions the relevance dataset keeps), over ImageNet's 1,000 classes.
SCALE_ENTRIES = 464_000
SCALE_WITH_TEXT = 445_984
SCALE_MORE_THAN_ONE_WORD = 389_598
SCALE_CLASSES = 1000
SCALE_JPEGS = 16


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct lower-case pseudo-words of 2-4 syllables (a caption vocabulary)."""
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "er", "in", "on", "or", "ul"]
    words: set[str] = set()
    while len(words) < count:
        parts = rng.integers(0, len(syllables), size=(count, 4))
        sizes = rng.integers(2, 5, size=count)
        words.update("".join(syllables[p] for p in row[:n]) for row, n in zip(parts.tolist(), sizes.tolist()))
    ordered = sorted(words)[:count]
    return [ordered[i] for i in rng.permutation(count)]  # frequency ranks unrelated to spelling


def write_scale_twin(root: Path, fraction: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """The release's files at ``fraction`` x its real size, for timing the real reader and DataModule.

    ``imagenet_captions.json`` (:data:`SCALE_ENTRIES` x ``fraction`` entries over 1,000 classes of
    roughly normal sizes, the seed's shares of entries with text and with more than one word; titles
    of 1-8 words, descriptions of log-normal length with a long tail, Zipf-distributed words),
    ``class_descriptions.json`` (3-12 sentences per class), ``LOC_synset_mapping.txt`` and
    ``train/<wnid>/<filename>`` for every entry: a hard link to one of :data:`SCALE_JPEGS` small
    JPEGs written once under ``root/jpeg_pool``, so the real reader runs at full size without
    gigabytes of pixels. Returns ``{"items", "overrides", "experiment"}``: the entries written, the
    Hydra overrides that point the real data config at ``root`` (with the offline tokenizer), and the
    real-data experiment.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = max(SCALE_CLASSES, round(SCALE_ENTRIES * fraction))
    wnids = [f"n{1_000_000 + 7_919 * k:08d}" for k in range(SCALE_CLASSES)]
    vocabulary = _pseudo_words(rng, 30_000)
    zipf = zipf_weights(len(vocabulary))
    names = vocabulary[SCALE_CLASSES : 2 * SCALE_CLASSES]  # a class's name: a word of middling frequency
    share = np.clip(rng.normal(1.0, 0.3, SCALE_CLASSES), 0.05, None)  # roughly normal (seed's Fig. 1)
    sizes = 1 + rng.multinomial(n - SCALE_CLASSES, share / share.sum())
    labels = np.repeat(np.arange(SCALE_CLASSES), sizes)
    # what each entry's text is: none (tags only), one word, or more (the seed's shares)
    kind = rng.choice(
        3,
        size=n,
        p=[
            1 - SCALE_WITH_TEXT / SCALE_ENTRIES,
            (SCALE_WITH_TEXT - SCALE_MORE_THAN_ONE_WORD) / SCALE_ENTRIES,
            SCALE_MORE_THAN_ONE_WORD / SCALE_ENTRIES,
        ],
    )
    title_len = rng.integers(1, 9, size=n)
    description_len = np.minimum(np.round(rng.lognormal(2.3, 1.0, size=n)), 400).astype(int)
    description_len[rng.random(n) < 0.3] = 0
    title_len[kind == 2] = np.maximum(title_len[kind == 2], 2)
    title_len[kind == 1], description_len[kind == 1] = 1, 0
    title_len[kind == 0], description_len[kind == 0] = 0, 0
    words = rng.choice(len(vocabulary), size=int(title_len.sum() + description_len.sum()), p=zipf).tolist()
    mentions_class = rng.random(n) < 0.6
    entries, cursor = [], 0
    for i in range(n):
        label = int(labels[i])
        title = words[cursor : cursor + title_len[i]]
        cursor += title_len[i]
        description = words[cursor : cursor + description_len[i]]
        cursor += description_len[i]
        if mentions_class[i] and kind[i] == 2:
            title[0] = SCALE_CLASSES + label  # the class's name
        entries.append(
            {
                "filename": f"{wnids[label]}_{i}.JPEG",
                "wnid": wnids[label],
                "title": " ".join(vocabulary[w] for w in title),
                "description": " ".join(vocabulary[w] for w in description),
                "tags": [names[label]] if i % 3 else [],
            }
        )
    descriptions = {}
    for k, wnid in enumerate(wnids):
        sentence_words = rng.choice(len(vocabulary), size=(int(rng.integers(3, 13)), 18), p=zipf)
        descriptions[wnid] = [
            f"The {names[k]} " + " ".join(vocabulary[w] for w in row[: 6 + int(rng.integers(12))]) + "."
            for row in sentence_words
        ]
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "imagenet_captions.json", json.dumps(entries))
    atomic_write_text(root / "class_descriptions.json", json.dumps(descriptions))
    atomic_write_text(
        root / "LOC_synset_mapping.txt",
        "".join(f"{w} {names[k]}, {names[k]} {k}\n" for k, w in enumerate(wnids)),
    )
    pool = root / "jpeg_pool"
    pool.mkdir(exist_ok=True)
    palette = glyph_palette(seed)
    jpegs = []
    for j in range(SCALE_JPEGS):
        path = pool / f"image_{j:02d}.JPEG"
        save_jpeg(render_scene(Scene(glyphs=(palette[j % len(palette)],)), 64, rng), path)
        jpegs.append(path)
    for wnid in wnids:
        (root / "train" / wnid).mkdir(parents=True, exist_ok=True)
    for i, entry in enumerate(entries):
        target = root / "train" / entry["wnid"] / entry["filename"]
        if not target.exists():
            os.link(jpegs[i % SCALE_JPEGS], target)
    return {
        "items": n,
        "overrides": [f"data.root={root}", "model.net.text_encoder.name=roberta_small"],
        "experiment": "relevance_imagenet_captions",
    }
