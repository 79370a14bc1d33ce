"""Class-name cleaning and the WordNet hashtag mapping, on real WordNet 3.0 installed the offline way
(Debian's wordnet-base + wordnet-sense-index copied into a tmp nltk_data with a generated lexnames)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from experiments.map_hashtags import (
    MAPPING_FILE,
    clean_name,
    lookup_candidates,
    map_classes,
    read_class_list,
    to_csv,
)
from experiments.prepare_wordnet import SYSTEM_DIR, WordNetMissing, lexnames_text, load_wordnet, prepare
from tests.conftest import REAL_FORMATS

CLASS_LIST = REAL_FORMATS / "sun397" / "ClassName.txt"


@pytest.fixture(scope="session")
def wordnet(tmp_path_factory):
    if not (SYSTEM_DIR / "data.noun").is_file():
        pytest.skip(f"WordNet system files absent ({SYSTEM_DIR}): apt-get install -y --no-install-recommends "
                    "wordnet-base wordnet-sense-index")
    folder = prepare(tmp_path_factory.mktemp("nltk_data"), source="system")
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    return load_wordnet(folder)


@pytest.mark.parametrize("path,expected", [
    ("/b/basketball_court/outdoor", "basketball court"),
    ("/a/abbey", "abbey"),
    ("/v/volleyball_court/indoor", "volleyball court"),
    ("/b/balcony/exterior", "balcony"),
    ("/e/elevator/interior", "elevator"),
    ("/s/stadium/baseball", "stadium baseball"),
    ("/t/theater/indoor_procenium", "theater procenium"),
])
def test_clean_name(path, expected):
    assert clean_name(path) == expected


def test_lookup_candidates_try_subclass_first_then_class_then_head():
    assert lookup_candidates("/s/stadium/baseball") == ["stadium baseball", "baseball stadium", "stadium"]
    assert lookup_candidates("/s/shoe_shop") == ["shoe shop", "shop"]


def test_lexnames_has_the_45_lexicographer_files():
    lines = lexnames_text().splitlines()
    assert len(lines) == 45 and lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[-1] == "44\tadj.ppl\t3"


def test_missing_wordnet_says_what_to_run(tmp_path):
    import nltk

    saved = list(nltk.data.path)
    nltk.data.path[:] = []  # no other nltk_data folders
    try:
        with pytest.raises(WordNetMissing, match="python -m experiments.prepare_wordnet"):
            load_wordnet(tmp_path / "empty")
    finally:
        nltk.data.path[:] = saved


SEED_TABLE_1 = [  # the seed's Table 1: class, hypernym, hashtag
    ("/s/shoe_shop", "shop.n.01", "shopping"),
    ("/t/toyshop", "shop.n.01", "shopping"),
    ("/v/volleyball_court/indoor", "court.n.04", "sport"),
    ("/w/wrestling_ring/indoor", "ring.n.07", "sport"),
    ("/r/rainforest", "forest.n.01", "forest"),
    ("/p/pantry", "storeroom.n.01", "other"),
]


def test_seed_examples_map_through_their_hypernyms(wordnet):
    rows = {r.class_path: r for r in map_classes([c for c, _, _ in SEED_TABLE_1], wordnet)}
    for cls, hypernym, hashtag in SEED_TABLE_1:
        assert (rows[cls].hypernym, rows[cls].hashtag) == (hypernym, hashtag), rows[cls]
    assert rows["/p/pantry"].decided == "none" and rows["/r/rainforest"].decided == "rule"


def test_committed_mapping_is_the_tools_output(wordnet):
    if not CLASS_LIST.is_file():
        pytest.skip(f"real SUN397 excerpts absent ({CLASS_LIST})")
    rows = map_classes(read_class_list(CLASS_LIST), wordnet)
    assert to_csv(rows) == MAPPING_FILE.read_text(), "rerun: python -m experiments.map_hashtags"
    assert len(rows) == 397
    tagged = sum(r.hashtag != "other" for r in rows)
    assert 0.4 * 397 < tagged < 0.7 * 397  # the seed: about half
    seed_sport = ["/w/wrestling_ring/indoor", "/b/badminton_court/indoor", "/b/baseball_field", "/b/boxing_ring",
                  "/b/bullring", "/g/golf_course", "/r/racecourse", "/s/ski_slope", "/s/stadium/football",
                  "/t/tennis_court/outdoor", "/s/swimming_pool/indoor"]  # from the seed's Table 2
    by_class = {r.class_path: r.hashtag for r in rows}
    assert all(by_class[c] == "sport" for c in seed_sport)
    with Path(MAPPING_FILE).open() as f:
        assert next(csv.reader(f)) == ["class", "cleaned_name", "synset", "hypernym", "hashtag", "decided"]
