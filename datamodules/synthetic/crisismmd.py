"""Synthetic twin of CrisisMMD v2.0: tweets (text + images + event) in the release's TSV layout.

Written like the real release, read by :mod:`datamodules.crisismmd`::

    crisismmd_datasplit_agreed_label/task_informative_text_img_agreed_lab_{train,dev,test}.tsv
    crisismmd_datasplit_agreed_label/task_humanitarian_text_img_agreed_lab_{train,dev,test}.tsv
    crisismmd_datasplit_all/task_damage_text_img_{train,dev,test}.tsv      (the same 9 columns)
    CrisisMMD_v2.0/data_image/<event>/<D_M_YYYY>/<tweet_id>_<k>.jpg

(UTF-8, TAB-separated, LF, one header line, no quoting; ``image_id = <tweet_id>_<k>``; a tweet with
two images gives two rows.)

**What the labels depend on.** Every event has a hazard (wildfire, storm, earthquake, flood; the
events are weighted so each hazard is a quarter of the tweets). A tweet's text may name a hazard
(the event's own, another one, or none) and has a topic (donation, injured, missing, damage, other,
chit-chat); an image may show a hazard glyph (the event's own, another, or none), a person, a vehicle
and 0-2 rubble glyphs. Drawn with :mod:`datamodules.synthetic.world` (glyphs on scenes).

* informative: the image **or** the text shows *the event's own* hazard. An equality between two
  modalities (image x event, text x event) is not additive: a linear read-out of concatenated
  unimodal features cannot express it, interaction-modelling fusion can.
* humanitarian (labelled for ~80 % of the samples; the rest are masked): ``not_humanitarian`` when
  not informative, else from the text topic, refined by the image (injured + person ->
  ``injured_or_dead_people``, injured alone -> ``affected_individuals``; damage + vehicle ->
  ``vehicle_damage``, damage alone -> ``infrastructure_and_utility_damage``).
* damage (labelled only for images with rubble or a damage topic, as in the release where only
  infrastructure images are assessed): the rubble count, lowered by one when the image's hazard is not
  the event's (image x event interaction): 2 -> severe, 1 -> mild, 0 -> little_or_no_damage.

A tweet's text is 1-3 filler words, the hazard word (if any) and the topic phrase in random order,
sometimes an ``RT @user:`` prefix, the event's hashtag in 80 % of tweets and a ``t.co`` link from a
fixed pool of 20 (version 3; version 1 had 2-5 fillers, a fresh random link per tweet and the hashtag
in half of the tweets, which left too little signal for small encoders trained from scratch).

Each label is replaced by a random class with probability ``label_noise``. The classes are imbalanced
by construction (recorded per task and split in ``synthetic_meta.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.crisismmd import DAMAGE, DEFAULT_FILES, HUMANITARIAN, INFORMATIVE, SPLITS
from datamodules.synthetic.cache import META_FILE, ensure_generated
from datamodules.synthetic.world import Glyph, Scene, pseudo_words, render_scene, save_jpeg

_GENERATOR = "crisismmd-twin"
# 2: 1-3 filler words (was 2-5), links from a small fixed pool (were random); 3: event hashtag in 80 % of tweets
# (was 50 %); 4: image folders are real dates (3 had impossible ones such as 38_5_2017); 5: damage files with
# the 9 columns of the other *_text_img_* files (4 had 6). Same draws: 3-5 hold the same tweets, images and labels.
_VERSION = 5
_WORLD_SEED = 3

HAZARDS = ("fire", "storm", "quake", "flood")
# event -> (hazard, share of tweets, first day (d, m, yyyy))
EVENTS: dict[str, tuple[str, float, tuple[int, int, int]]] = {
    "california_wildfires": ("fire", 0.25, (10, 10, 2017)),
    "hurricane_harvey": ("storm", 0.09, (26, 8, 2017)),
    "hurricane_irma": ("storm", 0.08, (6, 9, 2017)),
    "hurricane_maria": ("storm", 0.08, (20, 9, 2017)),
    "iraq_iran_earthquake": ("quake", 0.125, (13, 11, 2017)),
    "mexico_earthquake": ("quake", 0.125, (20, 9, 2017)),
    "srilanka_floods": ("flood", 0.25, (31, 5, 2017)),
}
_HAZARD_WORDS = {
    "fire": ("wildfire", "flames", "burning"),
    "storm": ("hurricane", "winds", "storm"),
    "quake": ("earthquake", "quake", "tremor"),
    "flood": ("flooding", "flood", "rainfall"),
}
_EVENT_TAGS = {
    "california_wildfires": "#CaliforniaFires",
    "hurricane_harvey": "#Harvey",
    "hurricane_irma": "#Irma",
    "hurricane_maria": "#HurricaneMaria",
    "iraq_iran_earthquake": "#IranEarthquake",
    "mexico_earthquake": "#MexicoEarthquake",
    "srilanka_floods": "#FloodSL",
}
_TOPICS = {
    "donation": (0.2, ("donate", "volunteers", "relief fund", "please give")),
    "injured": (0.15, ("injured", "victims", "killed", "hospital")),
    "missing": (0.06, ("missing", "found safe", "search for")),
    "damage": (0.25, ("destroyed", "damaged", "collapsed", "wrecked")),
    "other": (0.2, ("update", "warning", "news", "officials say")),
    "chit": (0.14, ("fans", "game tonight", "party", "lol")),
}
_HAZARD_GLYPHS = {
    "fire": Glyph("triangle", "orange"),
    "storm": Glyph("ring", "cyan"),
    "quake": Glyph("chevron", "purple"),
    "flood": Glyph("hbar", "blue"),
}
_PERSON, _VEHICLE, _RUBBLE = Glyph("circle", "pink"), Glyph("square", "black"), Glyph("saltire", "brown")
_DISTRACTORS = (Glyph("star", "yellow"), Glyph("plus", "green"), Glyph("diamond", "white"))
_BACKGROUNDS = (
    frozenset(),
    frozenset({"sky"}),
    frozenset({"sky", "grass"}),
    frozenset({"sky", "clouds", "water"}),
    frozenset({"sand"}),
    frozenset({"sky", "snow"}),
)


@dataclass
class _Tweet:
    tweet_id: int
    event: str
    day: str
    text: str
    split: str
    images: list[dict[str, Any]] = field(default_factory=list)


def _params(
    num_tweets: int,
    image_size: int,
    seed: int,
    label_noise: float,
    two_image_prob: float,
    split_fractions: Sequence[float],
) -> dict[str, Any]:
    if num_tweets < 10:
        raise ValueError(f"num_tweets must be >= 10, got {num_tweets}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not 0 <= label_noise < 1 or not 0 <= two_image_prob <= 1:
        raise ValueError("label_noise must be in [0, 1) and two_image_prob in [0, 1]")
    fractions = [float(x) for x in split_fractions]
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split_fractions must be three shares summing to 1, got {fractions}")
    return {
        "num_tweets": int(num_tweets),
        "image_size": int(image_size),
        "seed": int(seed),
        "label_noise": float(label_noise),
        "two_image_prob": float(two_image_prob),
        "split_fractions": fractions,
    }


class _TwinModel:
    """Draws one tweet's text, images and labels from ``rng`` (the world itself is fixed)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(_WORLD_SEED)
        reserved = {w for ws in _HAZARD_WORDS.values() for w in ws} | {
            w for _, ps in _TOPICS.values() for p in ps for w in p.split()
        }
        self.fillers = pseudo_words(300, rng, exclude=reserved)
        # a small pool of shortened links: a URL is a few frequent noise tokens, not a fresh id per tweet
        # (random ids would fill the vocabulary with words seen once)
        chars = list("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        self.links = ["".join(rng.choice(chars, 10)) for _ in range(20)]
        self.events = list(EVENTS)
        self.event_p = np.array([EVENTS[e][1] for e in self.events])
        self.event_p = self.event_p / self.event_p.sum()
        self.topics = list(_TOPICS)
        self.topic_p = np.array([_TOPICS[t][0] for t in self.topics])
        self.topic_p = self.topic_p / self.topic_p.sum()

    @staticmethod
    def _hazard(rng: np.random.Generator, own: str, p_own: float, p_other: float) -> str | None:
        u = rng.random()
        if u < p_own:
            return own
        if u < p_own + p_other:
            others = [h for h in HAZARDS if h != own]
            return others[rng.integers(len(others))]
        return None

    def text(self, rng: np.random.Generator, event: str, text_hazard: str | None, topic: str) -> str:
        words = [self.fillers[i] for i in rng.integers(0, len(self.fillers), rng.integers(1, 4))]
        if text_hazard is not None:
            words.append(_HAZARD_WORDS[text_hazard][rng.integers(3)])
        phrases = _TOPICS[topic][1]
        words.append(phrases[rng.integers(len(phrases))])
        order = rng.permutation(len(words))
        text = " ".join(words[i] for i in order)
        if rng.random() < 0.3:
            text = f"RT @{self.fillers[rng.integers(len(self.fillers))]}: {text}"
        if rng.random() < 0.1:
            text = "Weâ€™re " + text  # the release's double-encoded apostrophe
        if rng.random() < 0.8:
            text += " " + _EVENT_TAGS[event]
        return f"{text} https://t.co/{self.links[rng.integers(len(self.links))]}"

    def image(self, rng: np.random.Generator, own: str, size: int) -> tuple[np.ndarray, dict[str, Any]]:
        hazard = self._hazard(rng, own, 0.45, 0.3)
        person, vehicle = bool(rng.random() < 0.4), bool(rng.random() < 0.3)
        rubble = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        glyphs = ([_HAZARD_GLYPHS[hazard]] if hazard else []) + [_PERSON] * person + [_VEHICLE] * vehicle
        glyphs += [_RUBBLE] * rubble
        if rng.random() < 0.3:
            glyphs.append(_DISTRACTORS[rng.integers(len(_DISTRACTORS))])
        order = rng.permutation(len(glyphs))
        scene = Scene(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], tuple(glyphs[i] for i in order))
        facts = {"hazard": hazard, "person": person, "vehicle": vehicle, "rubble": rubble}
        return render_scene(scene, size, rng), facts

    @staticmethod
    def labels(
        rng: np.random.Generator,
        own: str,
        text_hazard: str | None,
        topic: str,
        facts: dict[str, Any],
        noise: float,
    ) -> dict[str, str | None]:
        informative = facts["hazard"] == own or text_hazard == own
        if not informative:
            human = "not_humanitarian"
        elif topic == "donation":
            human = "rescue_volunteering_or_donation_effort"
        elif topic == "injured":
            human = "injured_or_dead_people" if facts["person"] else "affected_individuals"
        elif topic == "missing":
            human = "missing_or_found_people"
        elif topic == "damage":
            human = "vehicle_damage" if facts["vehicle"] else "infrastructure_and_utility_damage"
        else:
            human = "other_relevant_information"
        severity = facts["rubble"] if facts["hazard"] == own else max(0, facts["rubble"] - 1)
        out: dict[str, str | None] = {
            "informative": INFORMATIVE[0] if informative else INFORMATIVE[1],
            "humanitarian": human if rng.random() < 0.8 else None,
            "damage": DAMAGE[severity] if (facts["rubble"] > 0 or topic == "damage") else None,
        }
        classes = {"informative": INFORMATIVE, "humanitarian": HUMANITARIAN, "damage": DAMAGE}
        for task, label in out.items():
            if label is not None and rng.random() < noise:
                out[task] = classes[task][rng.integers(len(classes[task]))]
        return out


def _tsv(rows: list[list[str]], header: Sequence[str]) -> bytes:
    return "".join("\t".join(r) + "\n" for r in [list(header), *rows]).encode("utf-8")


FULL_HEADER = (
    "event_name",
    "tweet_id",
    "image_id",
    "tweet_text",
    "image",
    "label",
    "label_text",
    "label_image",
    "label_text_image",
)


def write_crisismmd(
    root: str | Path,
    *,
    num_tweets: int = 1600,
    image_size: int = 48,
    seed: int = 0,
    label_noise: float = 0.03,
    two_image_prob: float = 0.15,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> dict[str, Any]:
    """Write a synthetic CrisisMMD release under ``root`` (new or empty) and return its summary."""
    params = _params(num_tweets, image_size, seed, label_noise, two_image_prob, split_fractions)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; write_crisismmd needs a new or empty folder")
    model = _TwinModel()
    global_rng = np.random.default_rng([seed, 1])
    ids = 870_000_000_000_000_000 + np.cumsum(global_rng.integers(10**9, 10**12, size=num_tweets))
    cuts = np.cumsum(params["split_fractions"])[:2] * num_tweets
    split_of = np.array(SPLITS)[np.searchsorted(cuts, global_rng.permutation(num_tweets), side="right")]
    rows: dict[str, dict[str, list[list[str]]]] = {
        t: {s: [] for s in SPLITS} for t in ("informative", "humanitarian", "damage")
    }
    counts: Counter[tuple[str, str, str]] = Counter()
    for i in range(num_tweets):
        rng = np.random.default_rng([seed, 2, i])
        event = model.events[rng.choice(len(model.events), p=model.event_p)]
        own, _, (d, m, y) = EVENTS[event]
        text_hazard = model._hazard(rng, own, 0.35, 0.25)
        topic = model.topics[rng.choice(len(model.topics), p=model.topic_p)]
        text = model.text(rng, event, text_hazard, topic)
        date = datetime.date(y, m, d) + datetime.timedelta(days=int(rng.integers(0, 8)))
        day = f"{date.day}_{date.month}_{date.year}"
        tweet_id = str(int(ids[i]))
        for k in range(2 if rng.random() < params["two_image_prob"] else 1):
            pixels, facts = model.image(rng, own, image_size)
            image_id = f"{tweet_id}_{k}"
            rel = f"data_image/{event}/{day}/{image_id}.jpg"
            path = root / "CrisisMMD_v2.0" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            save_jpeg(pixels, path)
            labels = model.labels(rng, own, text_hazard, topic, facts, params["label_noise"])
            for task, label in labels.items():
                if label is None:
                    continue
                # label, label_text, label_image, label_text_image: the twin's labels are agreed
                row = [event, tweet_id, image_id, text, rel, label, label, label, "Positive"]
                rows[task][str(split_of[i])].append(row)
                counts[(task, str(split_of[i]), label)] += 1
    for task, pattern in DEFAULT_FILES.items():
        for split in SPLITS:
            _write(root / pattern.format(split=split), _tsv(rows[task][split], FULL_HEADER))
    summary = {
        "num_tweets": num_tweets,
        "rows": {t: {s: len(rows[t][s]) for s in SPLITS} for t in rows},
        "class_counts": {
            t: {
                s: {c: counts[(t, s, c)] for c in sorted({k[2] for k in counts if k[0] == t})} for s in SPLITS
            }
            for t in rows
        },
    }
    meta = {"generator": _GENERATOR, "version": _VERSION, "params": params, "summary": summary}
    (root / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return summary


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def ensure_crisismmd(
    root: str | Path,
    *,
    num_tweets: int = 1600,
    image_size: int = 48,
    seed: int = 0,
    label_noise: float = 0.03,
    two_image_prob: float = 0.15,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
) -> Path:
    """Make sure ``root`` holds the twin for these arguments (generated once, atomically, under a lock)."""
    params = _params(num_tweets, image_size, seed, label_noise, two_image_prob, split_fractions)
    return ensure_generated(
        root,
        generator=_GENERATOR,
        version=_VERSION,
        params=params,
        write=lambda folder: write_crisismmd(folder, **params),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: write (or reuse) a synthetic CrisisMMD twin and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--num-tweets", type=int, default=1600)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = ensure_crisismmd(args.root, num_tweets=args.num_tweets, image_size=args.image_size, seed=args.seed)
    print(json.dumps(json.loads((root / META_FILE).read_text())["summary"], indent=2))


if __name__ == "__main__":
    main()
