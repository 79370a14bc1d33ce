"""Synthetic twin of CrisisMMD v2.0: tweets (text + images + event) in the release's TSV layout, with
the label structure of the real release.

Written like the real release, read by :mod:`datamodules.crisismmd`::

    crisismmd_datasplit_all/task_{informative,humanitarian,damage}_text_img_{train,dev,test}.tsv
    crisismmd_datasplit_agreed_label/task_{informative,humanitarian}_text_img_agreed_lab_{split}.tsv
    CrisisMMD_v2.0/data_image/<event>/<D_M_YYYY>/<tweet_id>_<k>.jpg

(UTF-8, TAB-separated, LF, one header line, no quoting; ``image_id = <tweet_id>_<k>``; a tweet with
several images gives one row per image.)

**The design** (version 7; every number from the real release, sources in ``docs/crisismmd.md``).
In the release the text of a tweet and each of its images were labelled separately (``label_text``,
``label_image``); the all-data files hold every pair with a ``label`` that is one of the two, the
agreed-label files only the pairs where they agree. The twin draws the two *views* of every pair:

* **informative** (text view, image view) from the release's joint shares: both informative 49.7 %,
  text only 23.3 %, image only 5.6 %, neither 21.4 % (:data:`INFORMATIVE_VIEWS`): the views disagree
  on 29 % of the pairs (release: 1 - 12,708 / 18,082 = 29.7 %);
* **humanitarian**: a non-informative view is ``not_humanitarian``; an informative view has a category
  from that modality's own class shares (:data:`TEXT_CATEGORIES`, :data:`IMAGE_CATEGORIES`: texts speak
  of other information and donations, images show damage); where both views are informative the image
  copies the text's category with probability :data:`CATEGORY_AGREEMENT` (0.435), else draws another:
  the views disagree on 56 % of the pairs (release: 1 - 8,079 / 18,082 = 55.3 %);
* **damage**: only images whose image view is ``infrastructure_and_utility_damage`` (as in the
  release), severity little / mild / severe from :data:`DAMAGE_SEVERITY` (13 / 22 / 65 %);
* a pair's ``label`` in the all-data files: the shared class where the views agree, else the text's
  or the image's by a fair coin (the release documents no rule; in its files the text's wins in about
  half of the disagreeing rows); ``label_text_image`` says whether they agree;
* events with the release's image counts per event (:data:`EVENTS`, 75 % hurricanes); 1.13 images per
  tweet (18,082 / 16,058); every text names its event (the tweets were collected by event keywords),
  so the event modality repeats what the text says and no label depends on it.

The text view is written into the tweet (a category phrase, or chit-chat for a non-informative text),
the image view into each image (the event's hazard glyph and category glyphs, rubble by damage
severity; no hazard for a non-informative image), among filler words and distractor glyphs. Drawn
with :mod:`datamodules.synthetic.world`. The class counts per task and split are recorded in
``synthetic_meta.json``.

:func:`write_scale_twin` writes the same metadata at the real release's size (18,082 pairs) with
every image a hard link to one of a few small JPEGs, for :mod:`experiments.bench` ``scale``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.crisismmd import AGREED_FILES, ALL_FILES, DAMAGE, INFORMATIVE, SPLITS, TASKS
from datamodules.files import atomic_write_text
from datamodules.synthetic.cache import META_FILE, ensure_written, require_empty, write_meta
from datamodules.synthetic.world import Glyph, Scene, pseudo_words, render_scene, save_jpeg

_GENERATOR = "crisismmd-twin"
# 7: the first tweet of each split an agreeing infrastructure-damage report (a row in every file of a tiny
# twin); 6: views and label shares of the real release (text and image views, all-data and agreed files);
# 5: damage files with the 9 columns of the other *_text_img_* files (4 had 6); 4: real date folders.
_VERSION = 7
_WORLD_SEED = 3

#: event -> (hazard, images in the release (Alam et al. 2018, Table 2), first day (d, m, yyyy)).
EVENTS: dict[str, tuple[str, int, tuple[int, int, int]]] = {
    "hurricane_irma": ("storm", 4525, (6, 9, 2017)),
    "hurricane_harvey": ("storm", 4443, (26, 8, 2017)),
    "hurricane_maria": ("storm", 4562, (20, 9, 2017)),
    "california_wildfires": ("fire", 1589, (10, 10, 2017)),
    "mexico_earthquake": ("quake", 1382, (20, 9, 2017)),
    "iraq_iran_earthquake": ("quake", 600, (13, 11, 2017)),
    "srilanka_floods": ("flood", 1025, (31, 5, 2017)),
}
#: Images per tweet: P(1..4); mean 1.13 (the release: 18,082 images of 16,058 tweets).
IMAGES_PER_TWEET = (0.91, 0.06, 0.02, 0.01)
#: (text informative, image informative) -> pairs, all-data informative files (train/dev/test excerpts).
INFORMATIVE_VIEWS = {(True, True): 446, (True, False): 209, (False, True): 50, (False, False): 192}
#: Humanitarian categories of informative views, all-data humanitarian files (dev/test excerpts).
TEXT_CATEGORIES = {
    "other_relevant_information": 228,
    "rescue_volunteering_or_donation_effort": 122,
    "infrastructure_and_utility_damage": 33,
    "affected_individuals": 23,
    "injured_or_dead_people": 21,
    "vehicle_damage": 4,
    "missing_or_found_people": 0,
}
IMAGE_CATEGORIES = {
    "infrastructure_and_utility_damage": 115,
    "other_relevant_information": 101,
    "rescue_volunteering_or_donation_effort": 72,
    "affected_individuals": 16,
    "vehicle_damage": 9,
    "injured_or_dead_people": 2,
    "missing_or_found_people": 1,
}
#: Share of pairs with two informative views whose categories agree (excerpts: 124 of 285).
CATEGORY_AGREEMENT = 0.435
#: Damage severity of the images assessed (damage dev/test excerpts: 77 / 132 / 389 of 598).
DAMAGE_SEVERITY = {"little_or_no_damage": 77, "mild_damage": 132, "severe_damage": 389}
#: The release's all-data split sizes (pairs): 13,608 / 2,237 / 2,237.
RELEASE_SPLITS = {"train": 13608, "dev": 2237, "test": 2237}
_RELEASE_FRACTIONS = tuple(RELEASE_SPLITS[s] / sum(RELEASE_SPLITS.values()) for s in SPLITS)

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
_CATEGORY_PHRASES = {
    "affected_individuals": ("families displaced", "people affected", "evacuees", "homeless"),
    "infrastructure_and_utility_damage": ("destroyed", "power outage", "bridge collapsed", "roads damaged"),
    "injured_or_dead_people": ("injured", "killed", "death toll", "victims"),
    "missing_or_found_people": ("missing", "found safe", "search for"),
    "other_relevant_information": ("update", "warning", "news", "officials say"),
    "rescue_volunteering_or_donation_effort": ("donate", "volunteers", "relief fund", "rescue teams"),
    "vehicle_damage": ("cars flooded", "truck crushed", "vehicles wrecked"),
}
_CHIT_CHAT = ("fans", "game tonight", "party", "lol", "selfie", "new song")
_HAZARD_GLYPHS = {
    "fire": Glyph("triangle", "orange"),
    "storm": Glyph("ring", "cyan"),
    "quake": Glyph("chevron", "purple"),
    "flood": Glyph("hbar", "blue"),
}
_PERSON, _VEHICLE, _RUBBLE = Glyph("circle", "pink"), Glyph("square", "black"), Glyph("saltire", "brown")
_BUILDING, _AID, _WOUND = Glyph("hexagon", "white"), Glyph("plus", "green"), Glyph("plus", "red")
_QUESTION, _SIGN = Glyph("crescent", "yellow"), Glyph("vbar", "magenta")
_CATEGORY_GLYPHS = {
    "affected_individuals": (_PERSON,),
    "infrastructure_and_utility_damage": (_BUILDING,),
    "injured_or_dead_people": (_PERSON, _WOUND),
    "missing_or_found_people": (_PERSON, _QUESTION),
    "other_relevant_information": (_SIGN,),
    "rescue_volunteering_or_donation_effort": (_AID,),
    "vehicle_damage": (_VEHICLE, _RUBBLE),
}
_DISTRACTORS = (Glyph("star", "yellow"), Glyph("diamond", "red"), Glyph("tee", "cyan"))
_BACKGROUNDS = (
    frozenset(),
    frozenset({"sky"}),
    frozenset({"sky", "grass"}),
    frozenset({"sky", "clouds", "water"}),
    frozenset({"sand"}),
    frozenset({"sky", "snow"}),
)
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
_NOT_HUMANITARIAN = "not_humanitarian"


def _shares(counts: dict[Any, float]) -> tuple[list[Any], np.ndarray]:
    keys = list(counts)
    p = np.array([counts[k] for k in keys], dtype=float)
    return keys, p / p.sum()


@dataclass
class PairViews:
    """One tweet-image pair: each task's text view, image view and pair label (``None``: not listed)."""

    text: dict[str, str | None]
    image: dict[str, str | None]
    label: dict[str, str | None] = field(default_factory=dict)


class TwinModel:
    """Draws tweets (views, text, image content) from an ``rng``; the world itself is fixed."""

    def __init__(self) -> None:
        rng = np.random.default_rng(_WORLD_SEED)
        reserved = {w for ws in _HAZARD_WORDS.values() for w in ws} | {
            w for ps in (*_CATEGORY_PHRASES.values(), _CHIT_CHAT) for p in ps for w in p.split()
        }
        self.fillers = pseudo_words(300, rng, exclude=reserved)
        # a small pool of shortened links: a URL is a few frequent noise tokens, not a fresh id per tweet
        chars = list("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789")
        self.links = ["".join(rng.choice(chars, 10)) for _ in range(20)]
        self.events, self.event_p = _shares({e: v[1] for e, v in EVENTS.items()})
        self.views, self.view_p = _shares(INFORMATIVE_VIEWS)
        self.text_categories, self.text_category_p = _shares(TEXT_CATEGORIES)
        self.image_categories, self.image_category_p = _shares(IMAGE_CATEGORIES)
        self.severities, self.severity_p = _shares(DAMAGE_SEVERITY)

    # ------------------------------------------------------------------ views and labels
    def tweet(self, rng: np.random.Generator) -> tuple[str, int, bool, str | None]:
        """``(event, images, text informative, text category)`` of a new tweet."""
        event = self.events[rng.choice(len(self.events), p=self.event_p)]
        images = 1 + int(rng.choice(len(IMAGES_PER_TWEET), p=IMAGES_PER_TWEET))
        text_informative, _ = self.views[rng.choice(len(self.views), p=self.view_p)]
        category = (
            self.text_categories[rng.choice(len(self.text_categories), p=self.text_category_p)]
            if text_informative
            else None
        )
        return event, images, bool(text_informative), category

    def pair(
        self, rng: np.random.Generator, text_informative: bool, text_category: str | None, agree: bool = False
    ) -> PairViews:
        """The views and labels of one image of a tweet with the given text view (``agree``: the image
        view is the text view)."""
        # P(image informative | text view) from the joint shares of INFORMATIVE_VIEWS
        given = {v: INFORMATIVE_VIEWS[(text_informative, v)] for v in (True, False)}
        image_informative = (
            text_informative if agree else bool(rng.random() < given[True] / (given[True] + given[False]))
        )
        image_category = None
        if image_informative:
            if text_category is not None and (agree or rng.random() < CATEGORY_AGREEMENT):
                image_category = text_category
            else:
                p = self.image_category_p.copy()
                if text_category is not None:  # both informative, disagreeing: another category
                    p[self.image_categories.index(text_category)] = 0.0
                image_category = self.image_categories[rng.choice(len(p), p=p / p.sum())]
        text = {
            "informative": INFORMATIVE[0] if text_informative else INFORMATIVE[1],
            "humanitarian": text_category or _NOT_HUMANITARIAN,
        }
        image = {
            "informative": INFORMATIVE[0] if image_informative else INFORMATIVE[1],
            "humanitarian": image_category or _NOT_HUMANITARIAN,
        }
        # damage: assessed on the images whose image view is infrastructure damage, from the image alone
        if image_category == "infrastructure_and_utility_damage":
            image["damage"] = text["damage"] = self.severities[
                rng.choice(len(self.severities), p=self.severity_p)
            ]
        else:
            image["damage"] = text["damage"] = None
        views = PairViews(text, image)
        for task in TASKS:
            a, b = text[task], image[task]
            views.label[task] = a if a == b or rng.random() < 0.5 else b
        return views

    # ------------------------------------------------------------------ rendering
    def text(self, rng: np.random.Generator, event: str, category: str | None) -> str:
        words = [self.fillers[i] for i in rng.integers(0, len(self.fillers), rng.integers(1, 4))]
        hazard = EVENTS[event][0]
        # every tweet names its event (collected by event keywords): its hashtag or a hazard word
        words.append(_EVENT_TAGS[event] if rng.random() < 0.6 else _HAZARD_WORDS[hazard][rng.integers(3)])
        phrases = _CATEGORY_PHRASES[category] if category else _CHIT_CHAT
        words.append(phrases[rng.integers(len(phrases))])
        order = rng.permutation(len(words))
        text = " ".join(words[i] for i in order)
        if rng.random() < 0.3:
            text = f"RT @{self.fillers[rng.integers(len(self.fillers))]}: {text}"
        if rng.random() < 0.1:
            text = "Weâ€™re " + text  # the release's double-encoded apostrophe
        return f"{text} https://t.co/{self.links[rng.integers(len(self.links))]}"

    def scene(self, rng: np.random.Generator, event: str, views: PairViews) -> Scene:
        category = views.image["humanitarian"]
        glyphs: list[Glyph] = []
        if category != _NOT_HUMANITARIAN:
            glyphs.append(_HAZARD_GLYPHS[EVENTS[event][0]])
            glyphs += _CATEGORY_GLYPHS[category]
            if views.image["damage"] is not None:
                glyphs += [_RUBBLE] * DAMAGE.index(views.image["damage"])  # little 0, mild 1, severe 2
        elif rng.random() < 0.4:
            glyphs.append(_PERSON)  # people in everyday pictures
        if rng.random() < 0.4:
            glyphs.append(_DISTRACTORS[rng.integers(len(_DISTRACTORS))])
        order = rng.permutation(len(glyphs))
        return Scene(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], tuple(glyphs[i] for i in order))


# ---------------------------------------------------------------------------------- writing
def _params(
    num_tweets: int, image_size: int, seed: int, split_fractions: Sequence[float] | None
) -> dict[str, Any]:
    """The twin's parameters as recorded, checked; ``split_fractions`` defaults to the release's."""
    if num_tweets < 10:
        raise ValueError(f"num_tweets must be >= 10, got {num_tweets}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    fractions = [float(x) for x in split_fractions or _RELEASE_FRACTIONS]
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split_fractions must be three positive shares summing to 1, got {fractions}")
    return {
        "num_tweets": int(num_tweets),
        "image_size": int(image_size),
        "seed": int(seed),
        "split_fractions": fractions,
    }


class _ReleaseWriter:
    """Collects rows per file and class counts, then writes the release's TSVs under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: dict[str, list[list[str]]] = {}
        self.counts: Counter[tuple[str, str, str, str]] = Counter()
        self.images = 0

    def add(self, event: str, tweet_id: str, k: int, day: str, text: str, split: str, v: PairViews) -> Path:
        """List image ``k`` of a tweet posted on ``day`` in its files; return where the image goes (its
        folder created)."""
        image_id = f"{tweet_id}_{k}"
        rel = f"data_image/{event}/{day}/{image_id}.jpg"
        for task in TASKS:
            label = v.label[task]
            if label is None:
                continue
            a, b = v.text[task], v.image[task]
            agree = a == b
            if task == "damage":  # an image annotation: label_text repeats it (as in the other columns)
                a, agree = b, True
            row = [event, tweet_id, image_id, text, rel, label, a, b, "Positive" if agree else "Negative"]
            self.rows.setdefault(ALL_FILES[task].format(split=split), []).append(row)
            self.counts[("all", task, split, label)] += 1
            if agree and AGREED_FILES[task] != ALL_FILES[task]:
                self.rows.setdefault(AGREED_FILES[task].format(split=split), []).append(row)
                self.counts[("agreed", task, split, label)] += 1
        self.images += 1
        path = self.root / "CrisisMMD_v2.0" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self) -> dict[str, Any]:
        names = {
            files[task].format(split=split)
            for files in (ALL_FILES, AGREED_FILES)
            for task in TASKS
            for split in SPLITS
        }
        for name in sorted(names):
            body = [FULL_HEADER, *self.rows.get(name, [])]
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes("".join("\t".join(r) + "\n" for r in body).encode("utf-8"))
        class_counts = {f: {t: {s: {} for s in SPLITS} for t in TASKS} for f in ("all", "agreed")}
        for (files, task, split, c), n in sorted(self.counts.items()):
            class_counts[files][task][split][c] = n
        return {
            "rows": {name: len(rows) for name, rows in sorted(self.rows.items())},
            "class_counts": class_counts,
        }


def _tweets(model: TwinModel, seed: int, num_tweets: int, fractions: Sequence[float]):
    """Yield ``(tweet_id, event, day, text, split, [PairViews per image], rng)`` for every tweet."""
    global_rng = np.random.default_rng([seed, 1])
    ids = 870_000_000_000_000_000 + np.cumsum(global_rng.integers(10**9, 10**12, size=num_tweets))
    cuts = np.cumsum(fractions)[:2] * num_tweets
    split_of = np.array(SPLITS)[np.searchsorted(cuts, global_rng.permutation(num_tweets), side="right")]
    first_of_split: set[str] = set()
    for i in range(num_tweets):
        rng = np.random.default_rng([seed, 2, i])
        event, images, text_informative, text_category = model.tweet(rng)
        # The first tweet of every split: an infrastructure-damage report whose first image agrees, so
        # that even a tiny twin has a row in every file and split (3 of a twin's tweets).
        anchor = str(split_of[i]) not in first_of_split
        first_of_split.add(str(split_of[i]))
        if anchor:
            text_informative, text_category = True, "infrastructure_and_utility_damage"
        d, m, y = EVENTS[event][2]
        date = datetime.date(y, m, d) + datetime.timedelta(days=int(rng.integers(0, 8)))
        text = model.text(rng, event, text_category)
        pairs = [
            model.pair(rng, text_informative, text_category, agree=anchor and k == 0) for k in range(images)
        ]
        yield (
            str(int(ids[i])),
            event,
            f"{date.day}_{date.month}_{date.year}",
            text,
            str(split_of[i]),
            pairs,
            rng,
        )


def write_crisismmd(
    root: str | Path,
    *,
    num_tweets: int = 1600,
    image_size: int = 48,
    seed: int = 0,
    split_fractions: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write a synthetic CrisisMMD release under ``root`` (new or empty) and return its summary.

    ``split_fractions``: the official train/dev/test shares of the tweets (default: the release's)."""
    params = _params(num_tweets, image_size, seed, split_fractions)
    root = Path(root)
    require_empty(root, "write_crisismmd")
    model, writer = TwinModel(), _ReleaseWriter(root)
    for tweet_id, event, day, text, split, pairs, rng in _tweets(
        model, seed, num_tweets, params["split_fractions"]
    ):
        for k, views in enumerate(pairs):
            path = writer.add(event, tweet_id, k, day, text, split, views)
            save_jpeg(render_scene(model.scene(rng, event, views), image_size, rng), path)
    summary = {"num_tweets": num_tweets, "images": writer.images, **writer.write()}
    write_meta(root, _GENERATOR, _VERSION, params, {"summary": summary}, indent=2, sort_keys=True)
    return summary


def ensure_crisismmd(root: str | Path, **params: Any) -> Path:
    """Make sure ``root`` holds the twin for these :func:`write_crisismmd` arguments (generated once,
    atomically, under a lock)."""
    return ensure_written(
        root, write_crisismmd, params, generator=_GENERATOR, version=_VERSION, what="twin", normalize=_params
    )


#: Small real-format JPEGs every image of a scale twin is a hard link to (a few, written once).
SCALE_TEMPLATES = 16


def write_scale_twin(root: Path, fraction: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """The release's metadata at ``fraction`` x its real size (18,082 pairs of ~16,058 tweets, the
    all-data and agreed-label files with their real columns) under ``root``, every image a hard link
    (``os.link``) to one of :data:`SCALE_TEMPLATES` small JPEGs written once under ``root``.

    Returns ``{"items": images, "overrides": [...], "experiment": "crisismmd_real"}``: the overrides make
    the real data config (``conf/data/crisismmd.yaml``, all-data files) read it; its text tokenizer is
    the offline vocabulary (the real experiment's BERT tokenizer needs the Hugging Face hub).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    root = Path(root)
    target = max(3, round(fraction * sum(RELEASE_SPLITS.values())))
    summary_path = root / "crisismmd_scale_twin.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("params") == {"fraction": fraction, "seed": seed, "version": _VERSION}:
            return done["result"]
    require_empty(root, "write_scale_twin")
    templates = root / "templates"
    templates.mkdir(parents=True)
    rng = np.random.default_rng([seed, 7])
    model = TwinModel()
    sources = []
    for k in range(SCALE_TEMPLATES):
        path = templates / f"template_{k:02d}.jpg"
        event = model.events[k % len(model.events)]
        views = model.pair(rng, True, "infrastructure_and_utility_damage")
        save_jpeg(render_scene(model.scene(rng, event, views), 64, rng), path)
        sources.append(path)
    writer, tweets = _ReleaseWriter(root), 0
    # more tweets than the images need on average: the loop stops at the target
    num_tweets = int(1.2 * target / (np.arange(1, 5) @ np.array(IMAGES_PER_TWEET))) + 64
    for tweet_id, event, day, text, split, pairs, _ in _tweets(model, seed, num_tweets, _RELEASE_FRACTIONS):
        tweets += 1
        for k, views in enumerate(pairs[: target - writer.images]):
            path = writer.add(event, tweet_id, k, day, text, split, views)
            os.link(sources[(tweets + k) % SCALE_TEMPLATES], path)
        if writer.images >= target:
            break
    writer.write()
    result = {
        "items": writer.images,
        "overrides": [f"data.root={root}", "data.text_encoder=bilstm"],
        "experiment": "crisismmd_real",
    }
    params = {"fraction": fraction, "seed": seed, "version": _VERSION}
    atomic_write_text(summary_path, json.dumps({"params": params, "tweets": tweets, "result": result}) + "\n")
    return result


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
