"""Synthetic twin of ImageNet-Captions for the relevance filter (seed 000).

Writes, in the release's format (read by :mod:`datamodules.imagenet_captions.reader`)::

    imagenet_captions.json        JSON list of {filename, wnid, title, description, tags}
    class_descriptions.json       wnid -> list of 3-12 description sentences (the user's file)
    LOC_synset_mapping.txt        '<wnid> <names>' per line, for the classes used
    train/<wnid>/<filename>       one small JPEG per caption (the class glyph on a scene)
    planted_irrelevant.json       {"irrelevant": [entry indices], "kinds": {index: kind}}: the known noise
    synthetic_meta.json           generator, version, parameters (the completion marker)

Classes are real ImageNet classes (wnid = 'n' + 8-digit WordNet noun offset). A relevant caption
names its class (a name or synonym) and some of the class's cue words, which its description
sentences share; a share ``irrelevant_share`` of the captions is planted noise that does not reveal
the class: camera settings, dates, "my trip", or text about *another* class. Class sizes are skewed
(Zipf-like) so the small-class split guarantees matter. Deterministic for the same parameters.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.synthetic.cache import META_FILE, ensure_generated
from datamodules.synthetic.world import Scene, glyph_palette, render_scene, save_jpeg

GENERATOR = "imagenet_captions"
VERSION = 1

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
    image_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the twin into ``root`` (see the module docstring); returns the meta record."""
    if not 2 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
    rng = np.random.default_rng(seed)
    classes = CLASSES[:num_classes]
    names = {w: [n.strip() for n in names.split(",")] for w, names, _ in classes}
    cues = {w: c for w, _, c in classes}
    # skewed class sizes (the largest ~8x the smallest), every class at least 4 captions
    weights = 1.0 / (1.0 + np.arange(num_classes) / 4.0)
    sizes = np.maximum(4, np.round(weights / weights.sum() * num_captions)).astype(int)
    order = rng.permutation(num_classes)
    palette = glyph_palette(seed)
    entries, planted = [], {}
    for c in order:
        wnid = classes[c][0]
        for k in range(sizes[c]):
            index = len(entries)
            name = str(rng.choice(names[wnid][:3]))
            if rng.random() < irrelevant_share:
                kind = str(rng.choice(["camera", "date", "trip", "other_class"]))
                planted[index] = kind
                if kind == "other_class":
                    other = classes[(c + 1 + int(rng.integers(num_classes - 1))) % num_classes][0]
                    title = _fill(str(rng.choice(_TITLES)), rng, names[other][0], cues[other])
                    description = _fill(str(rng.choice(_DESCRIPTIONS)), rng, names[other][0], cues[other])
                else:
                    title = _fill(str(rng.choice(_IRRELEVANT[kind])), rng, name, cues[wnid])
                    description = _fill(str(rng.choice(_IRRELEVANT[kind])), rng, name, cues[wnid])
            else:
                title = _fill(str(rng.choice(_TITLES)), rng, name, cues[wnid])
                description = _fill(str(rng.choice(_DESCRIPTIONS)), rng, name, cues[wnid])
            # a few captions of one word only (the seed's >1-word filter drops them)
            if rng.random() < 0.04:
                title, description = name.split()[0], ""
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
            save_jpeg(render_scene(Scene(glyphs=(palette[c],)), image_size, rng), folder / filename)
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
        json.dumps({"irrelevant": sorted(planted), "kinds": {str(k): v for k, v in planted.items()}})
    )
    params = {
        "num_classes": num_classes,
        "num_captions": num_captions,
        "irrelevant_share": irrelevant_share,
        "image_size": image_size,
        "seed": seed,
    }
    meta = {
        "generator": GENERATOR,
        "version": VERSION,
        "params": params,
        "captions": len(entries),
        "planted_irrelevant": len(planted),
    }
    (root / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def ensure_imagenet_captions(root: str | Path, **params: Any) -> Path:
    """Generate the twin into ``root`` once (atomic, locked; regenerated when ``params`` change)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(write_imagenet_captions).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    full = {**defaults, **params}
    if set(full) != set(defaults):
        raise TypeError(f"unknown twin parameters {sorted(set(full) - set(defaults))}")
    return ensure_generated(
        root,
        generator=GENERATOR,
        version=VERSION,
        params=full,
        write=lambda folder: write_imagenet_captions(folder, **full),
    )
