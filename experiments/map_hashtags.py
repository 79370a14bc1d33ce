"""Map the SUN397 scene classes to popular hashtags through WordNet: ``python -m experiments.map_hashtags``.

The seed's semi-manual procedure (section 4.3), made reviewable:

1. **Clean** the class path: drop the letter prefix, slashes, ``indoor/outdoor/exterior/interior``
   and underscores (``/b/basketball_court/outdoor`` -> ``basketball court``).
2. **Find the noun synset**: the most frequent WordNet noun sense of the cleaned name; failing that
   of the subclass-first phrase (``/s/stadium/baseball`` -> ``baseball stadium``), of the class
   word without its subclass (``stadium``), then of the head noun (last word). A per-class synset in
   the overrides file wins (for a wrong first sense).
3. **Walk the hypernyms**, nearest first (breadth-first over every hypernym path, the synset itself
   at distance 0), and stop at the first synset that the **rules file** maps to a hashtag.
4. **Overrides** (class -> hashtag) win over the rules; what nothing maps gets ``other``.

Inputs (``conf/hashtags/wordnet/``): ``rules.yaml`` (the hashtag vocabulary and ``synset -> hashtag``
rules) and ``overrides.yaml`` (per-class ``synsets`` and ``hashtags``). Output: a CSV with
``class, cleaned_name, synset, hypernym, hashtag, decided`` (``decided`` in rule / override / none),
the committed one being ``conf/hashtags/sun397_hashtags.csv`` for the 397 classes of
``ClassName.txt``: the table of ``hashtags=rules``. The suite's default table is the seed author's
own (``hashtags=author``, ``conf/hashtags/sun397_hashtags_author.csv``); docs/hashtag.md compares
the two. WordNet must be prepared once (``python -m experiments.prepare_wordnet``).

    python -m experiments.map_hashtags --classes <SUN397>/ClassName.txt  # conf/hashtags/sun397_hashtags.csv
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.common import PROJECT_ROOT, atomic_write_text, doc_parser

log = logging.getLogger("map_hashtags")

HASHTAG_DIR = PROJECT_ROOT / "conf" / "hashtags"
RULES_FILE = HASHTAG_DIR / "wordnet" / "rules.yaml"
OVERRIDES_FILE = HASHTAG_DIR / "wordnet" / "overrides.yaml"
MAPPING_FILE = HASHTAG_DIR / "sun397_hashtags.csv"
DEFAULT_CLASSES = PROJECT_ROOT.parent / "shared" / "real-formats" / "sun397" / "ClassName.txt"
OTHER = "other"
DROP_WORDS = frozenset({"indoor", "outdoor", "exterior", "interior"})
COLUMNS = ("class", "cleaned_name", "synset", "hypernym", "hashtag", "decided")


@dataclass(frozen=True)
class Mapping:
    """One row of the mapping CSV."""

    class_path: str
    cleaned_name: str
    synset: str
    hypernym: str
    hashtag: str
    decided: str  # rule | override | none


# ------------------------------------------------------------------------------------------- names
def class_parts(class_path: str) -> list[str]:
    """``/b/basketball_court/outdoor`` -> ``["basketball_court", "outdoor"]`` (letter prefix dropped)."""
    parts = [p for p in class_path.strip().split("/") if p]
    if len(parts) >= 2 and len(parts[0]) == 1:
        parts = parts[1:]
    return parts


def clean_name(class_path: str) -> str:
    """The seed's cleaning: no letter prefix, slashes, indoor/outdoor/exterior/interior or underscores.

    >>> clean_name("/b/basketball_court/outdoor")
    'basketball court'
    >>> clean_name("/s/stadium/baseball")
    'stadium baseball'
    """
    return " ".join(w for part in class_parts(class_path) for w in _words(part))


def _words(part: str) -> list[str]:
    """The words of one part of a class path, without indoor/outdoor/exterior/interior."""
    return [w for w in part.replace("-", "_").split("_") if w and w.lower() not in DROP_WORDS]


def lookup_candidates(class_path: str) -> list[str]:
    """Phrases tried in order for the synset lookup (see module doc, step 2)."""
    parts = [words for words in map(_words, class_parts(class_path)) if words]
    if not parts:
        return []
    out = [" ".join(w for p in parts for w in p)]
    if len(parts) > 1:
        out.append(" ".join(w for p in reversed(parts) for w in p))
        out.append(" ".join(parts[0]))
    out.append(parts[0][-1])
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------------------- wordnet
def find_synset(wn, class_path: str, pinned: str | None = None):
    """The noun synset of a class (``None`` when WordNet has none for any candidate phrase)."""
    if pinned:
        return wn.synset(pinned)
    for phrase in lookup_candidates(class_path):
        synsets = wn.synsets(phrase.replace(" ", "_"), pos="n")
        if synsets:
            return synsets[0]
    return None


def hypernyms_nearest_first(synset) -> list:
    """The synset and all its hypernyms (instance hypernyms too), breadth-first: nearest first; at the
    same distance in synset-name order (deterministic)."""
    seen, order, frontier = {synset}, [synset], [synset]
    while frontier:
        nxt = []
        for s in frontier:
            for h in direct_hypernyms(s):
                if h not in seen:
                    seen.add(h)
                    order.append(h)
                    nxt.append(h)
        frontier = nxt
    return order


def direct_hypernyms(synset) -> list:
    """The synset's hypernyms and instance hypernyms in synset-name order (nltk's order varies)."""
    return sorted(synset.hypernyms() + synset.instance_hypernyms(), key=lambda x: x.name())


# ------------------------------------------------------------------------------------------- rules
def load_rules(path: Path = RULES_FILE) -> tuple[list[str], dict[str, str]]:
    """``(hashtags, {synset name: hashtag})``; every rule must name a hashtag of the vocabulary."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    hashtags = [str(h) for h in data.get("hashtags", [])]
    rules = {str(k): str(v) for k, v in (data.get("rules") or {}).items()}
    unknown = sorted({v for v in rules.values() if v not in hashtags})
    if unknown:
        raise ValueError(f"{path}: rules name hashtags outside the vocabulary: {unknown}")
    return hashtags, rules


def load_overrides(path: Path = OVERRIDES_FILE) -> tuple[dict[str, str], dict[str, str]]:
    """``({class: synset}, {class: hashtag or "other"})``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    synsets = {str(k): str(v) for k, v in (data.get("synsets") or {}).items()}
    hashtags = {str(k): (str(v) if v else OTHER) for k, v in (data.get("hashtags") or {}).items()}
    return synsets, hashtags


def map_class(
    wn, class_path: str, rules: dict[str, str], pinned: dict[str, str], overrides: dict[str, str]
) -> Mapping:
    synset = find_synset(wn, class_path, pinned.get(class_path))
    name = clean_name(class_path)
    matched, hashtag = None, None
    if synset is not None:
        for s in hypernyms_nearest_first(synset):
            if s.name() in rules:
                matched, hashtag = s, rules[s.name()]
                break
    synset_name = synset.name() if synset is not None else ""
    if class_path in overrides:
        hyper = matched.name() if matched is not None else ""
        return Mapping(class_path, name, synset_name, hyper, overrides[class_path], "override")
    if matched is not None:
        return Mapping(class_path, name, synset_name, matched.name(), hashtag, "rule")
    direct = direct_hypernyms(synset) if synset is not None else []
    return Mapping(class_path, name, synset_name, direct[0].name() if direct else "", OTHER, "none")


def map_classes(
    class_paths: Iterable[str], wn=None, rules_file: Path = RULES_FILE, overrides_file: Path = OVERRIDES_FILE
) -> list[Mapping]:
    if wn is None:
        from experiments.prepare_wordnet import load_wordnet

        wn = load_wordnet()
    hashtags, rules = load_rules(rules_file)
    pinned, overrides = load_overrides(overrides_file)
    bad = sorted({v for v in overrides.values() if v != OTHER and v not in hashtags})
    if bad:
        raise ValueError(f"{overrides_file}: overrides name hashtags outside the vocabulary: {bad}")
    return [map_class(wn, c, rules, pinned, overrides) for c in class_paths]


# ------------------------------------------------------------------------------------------- files
def read_class_list(path: Path) -> list[str]:
    """Class paths of a SUN397 ``ClassName.txt`` (via the dataset reader's checks)."""
    from datamodules.sun397 import read_class_names

    return read_class_names(Path(path))


def to_csv(rows: Sequence[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.class_path, r.cleaned_name, r.synset, r.hypernym, r.hashtag, r.decided])
    return buf.getvalue()


def summary(rows: Sequence[Mapping]) -> str:
    counts = Counter(r.hashtag for r in rows)
    tagged = sum(v for k, v in counts.items() if k != OTHER)
    lines = [f"{tagged}/{len(rows)} classes get a hashtag ({Counter(r.decided for r in rows)})"]
    lines += [f"  #{tag:<14} {n}" for tag, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = doc_parser(__doc__)
    parser.add_argument("--classes", type=Path, default=DEFAULT_CLASSES, help="SUN397 ClassName.txt")
    parser.add_argument("--rules", type=Path, default=RULES_FILE)
    parser.add_argument("--overrides", type=Path, default=OVERRIDES_FILE)
    parser.add_argument("--out", type=Path, default=MAPPING_FILE, help="output CSV ('-': stdout)")
    parser.add_argument(
        "--nltk-data", default=None, help="nltk_data folder (see experiments.prepare_wordnet)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from experiments.prepare_wordnet import WordNetMissing, load_wordnet

    try:
        wn = load_wordnet(args.nltk_data)
    except WordNetMissing as err:
        raise SystemExit(str(err)) from err
    rows = map_classes(read_class_list(args.classes), wn, args.rules, args.overrides)
    text = to_csv(rows)
    if str(args.out) == "-":
        print(text, end="")
    else:
        atomic_write_text(args.out, text)
        log.info("mapping of %d classes written to %s", len(rows), args.out)
    log.info("%s", summary(rows))


if __name__ == "__main__":
    main()
