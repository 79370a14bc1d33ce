"""The SUN397 -> hashtag tables the suite ships (``conf/hashtags``): the seed author's file as the
default, verbatim; the seed's Table 2 corrections as an option; the WordNet-rule table as ``rules``.
Read through the DataModule's own reader, checked against the seed's text (Fig. 10, Table 2, section 1)."""

from __future__ import annotations

import csv
import functools
import io
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from datamodules.sun397 import HashtagMapping, class_targets, read_class_names, read_hashtag_mapping
from tests.conftest import REAL_FORMATS
from tests.test_configs import compose_train
from tests.test_map_hashtags import SEED_HASHTAGS, SEED_TABLE_2_SPORT

HASHTAGS = Path(__file__).resolve().parents[1] / "conf" / "hashtags"
CLASS_LIST = REAL_FORMATS / "sun397" / "ClassName.txt"


@functools.cache
def _table(option: str) -> tuple[list[str], dict[str, str], dict]:
    cfg = compose_train("experiment=hashtag", f"hashtags={option}")
    spec = OmegaConf.to_container(cfg.data.hashtags, resolve=True)
    vocabulary, mapping = HashtagMapping(**spec).load()
    return vocabulary, mapping, spec


def table(option: str) -> tuple[list[str], dict[str, str], dict]:
    """``(vocabulary, {class: hashtag}, the config node)`` of a ``hashtags=<option>`` table (copies)."""
    vocabulary, mapping, spec = _table(option)
    return list(vocabulary), dict(mapping), dict(spec)


def test_author_table_is_the_repository_file_verbatim():
    """CRLF lines, the last without one, UTF-8 with the Russian column: as the author's repository has it."""
    raw = (HASHTAGS / "sun397_hashtags_author.csv").read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") == 397 and not raw.endswith(b"\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == ["raw_names", "names", "имена", "synsets", "hypernyms", "tags"]
    assert len(rows) == 1 + 397
    _, mapping, spec = table("author")
    assert spec["source"]["repository"] == "https://github.com/AlekseySh/scenes"
    assert spec["source"]["path"] == "sun_data/files/mapping.csv" and len(spec["source"]["commit"]) == 40
    assert mapping == {r[0]: r[5] or "other" for r in rows[1:]}


def test_author_table_uses_the_seeds_20_hashtags():
    """Fig. 10 (the confusion matrix) has the 20 hashtags + other; the seed says "about half" of the 397
    classes get one (section 4.3)."""
    vocabulary, mapping, _ = table("author")
    assert vocabulary == SEED_HASHTAGS + ["other"]
    counts = Counter(mapping.values())
    assert set(counts) == set(vocabulary)
    assert abs(sum(n for t, n in counts.items() if t != "other") / len(mapping) - 0.5) <= 0.1


def test_every_real_class_has_a_row_in_every_table():
    if not CLASS_LIST.is_file():
        pytest.skip(f"real SUN397 excerpts absent ({CLASS_LIST})")
    classes = read_class_names(CLASS_LIST)
    for option in ("author", "rules", "seed_table2"):
        vocabulary, mapping, spec = table(option)
        assert list(mapping) == classes, option  # same classes, the release's order
        targets = class_targets(classes, mapping, vocabulary, spec["mapping_file"])
        assert targets[classes.index("/s/shoe_shop")] == vocabulary.index("shopping")


def test_seed_table2_option_is_the_author_table_with_table_2_and_section_1():
    _, author, _ = table("author")
    _, corrected, spec = table("seed_table2")
    assert {c for c, t in corrected.items() if t == "sport"} == SEED_TABLE_2_SPORT
    assert corrected["/i/ice_shelf"] == "nature" and author["/i/ice_shelf"] == "snow"
    changed = {c for c in author if author[c] != corrected[c]}
    assert changed == set(spec["corrections"])
    assert {c for c in changed if author[c] == "sport"} == {c for c in changed if corrected[c] == "other"}


def test_rules_option_is_the_map_hashtags_output():
    _, mapping, spec = table("rules")
    assert Path(spec["mapping_file"]).name == "sun397_hashtags.csv"
    assert mapping == read_hashtag_mapping(HASHTAGS / "sun397_hashtags.csv")
    assert {c for c, t in mapping.items() if t == "sport"} == SEED_TABLE_2_SPORT


def test_corrections_must_name_known_classes(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("class,hashtag\n/a/abbey,church\n")
    spec = HashtagMapping(str(path), corrections={"/a/abbbey": "sport"})
    with pytest.raises(ValueError, match="abbbey"):
        spec.load()
    assert HashtagMapping(str(path), corrections={"/a/abbey": ""}).load() == (
        ["other"],
        {"/a/abbey": "other"},
    )
