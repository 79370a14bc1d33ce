"""The CrisisMMD reader on the real release's files (../shared/real-formats/crisismmd) and on the twin."""

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.crisismmd import (
    ALL_FILES,
    HUMANITARIAN,
    RELEASES,
    SPLITS,
    TASKS,
    random_split,
    read_crisismmd,
    read_task_file,
)
from datamodules.errors import DatasetFormatError
from datamodules.synthetic.crisismmd import ensure_crisismmd
from datamodules.synthetic.crisismmd import write_crisismmd as write_twin
from tests.conftest import REAL_FORMATS

REAL = REAL_FORMATS / "crisismmd"
AGREED = "crisismmd_datasplit_agreed_label"
DAMAGE_FILES = {"damage": "task_data/task_damage_{split}.tsv"}
#: The header of the release's *_text_img_* split files.
REAL_HEADER = [
    "event_name",
    "tweet_id",
    "image_id",
    "tweet_text",
    "image",
    "label",
    "label_text",
    "label_image",
    "label_text_image",
]


def need_real():
    if not (REAL / AGREED).is_dir():
        pytest.skip(f"real CrisisMMD excerpts not found under {REAL}")


@pytest.fixture
def real_release(tmp_path) -> Path:
    """A release folder built from the real excerpts (agreed-label informative + humanitarian, the
    authors' damage files) with a tiny image for every listed image but one."""
    need_real()
    root = tmp_path / "release"
    shutil.copytree(REAL / AGREED, root / AGREED)
    shutil.copytree(REAL / "firojalam_multimodal_social_media_task_data", root / "task_data")
    paths = set()
    for tsv in list((root / AGREED).glob("*.tsv")) + list((root / "task_data").glob("task_damage_*.tsv")):
        lines = tsv.read_text(encoding="utf-8").splitlines()
        col = [h.lower() for h in lines[0].split("\t")].index("image")
        paths |= {line.split("\t")[col] for line in lines[1:]}
    paths = sorted(paths)
    for rel in paths[1:]:
        out = root / "CrisisMMD_v2.0" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(out)
    return root


def test_real_files_parse_with_their_labels():
    need_real()
    rows, repeats = read_task_file(
        REAL / AGREED / "task_humanitarian_text_img_agreed_lab_train.tsv", "humanitarian"
    )
    assert len(rows) + repeats == 299 and rows[0].image_id.startswith(rows[0].tweet_id)
    assert rows[0].image.startswith("data_image/")
    rows, _ = read_task_file(
        REAL / "crisismmd_datasplit_all" / "task_informative_text_img_train.tsv", "informative"
    )
    assert any("â€™" in r.text for r in rows)  # the release's mojibake is kept as is
    damage, _ = read_task_file(
        REAL / "firojalam_multimodal_social_media_task_data" / "task_damage_dev.tsv", "damage"
    )
    assert damage[0].text is None and damage[0].tweet_id == damage[0].image_id.rsplit("_", 1)[0]


@pytest.mark.parametrize("column", ["label_text", "label_image"])
def test_label_column_of_the_all_data_files(column, caplog):
    need_real()
    path = REAL / "crisismmd_datasplit_all" / "task_informative_text_img_train.tsv"
    with path.open(newline="", encoding="utf-8") as f:  # the reference: the raw TSV through the csv module
        table = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    caplog.set_level(logging.INFO, logger="datamodules.crisismmd")
    rows, repeats = read_task_file(path, "informative", label_column=column)
    assert repeats == 0 and len(rows) == len(table)
    names = ["informative", "not_informative"]
    assert [names[r.label] for r in rows] == [t[column] for t in table]
    disagree = sum(t["label_text"] != t["label_image"] for t in table)
    assert disagree > 0 and f"differ on {disagree} of {len(table)} rows" in caplog.text
    with pytest.raises(DatasetFormatError, match="label_voted") as err:
        read_task_file(path, "informative", label_column="label_voted")
    assert err.value.line == 1


def test_join_masks_and_counts_a_missing_image(real_release):
    index = read_crisismmd(real_release, files=DAMAGE_FILES)
    stats = index.stats
    assert stats["missing_images"] == 1
    assert stats["rows"]["informative"]["train"] + stats["duplicate_rows"] >= 299
    labelled = {t: sum(s.labels[f] >= 0 for s in index.samples) for f, t in enumerate(TASKS)}
    assert labelled == stats["labelled"]
    # the excerpt files are cut independently, so every task leaves some samples unlabelled (masked)
    for f in range(3):
        assert any(s.labels[f] == -1 for s in index.samples)
    assert all(max(s.labels) >= 0 for s in index.samples)
    splits = random_split(index.samples, (0.6, 0.2, 0.2), seed=0)
    assert sum(len(v) for v in splits.values()) == len(index.samples)
    tweets = [{s.tweet_id for s in v} for v in splits.values()]
    assert not (tweets[0] & tweets[1]) and not (tweets[0] & tweets[2])


def test_malformed_row_names_file_and_line(real_release):
    path = real_release / AGREED / "task_informative_text_img_agreed_lab_train.tsv"
    with path.open("a", encoding="utf-8") as f:
        f.write("hurricane_irma\t123\t123_0\tonly four fields\n")
    with pytest.raises(DatasetFormatError) as err:
        read_crisismmd(real_release, files=DAMAGE_FILES)
    assert (
        err.value.path == path
        and err.value.line == 301
        and "expected 9 tab-separated fields" in str(err.value)
    )


def test_unknown_label_and_missing_file(real_release):
    with pytest.raises(DatasetFormatError, match="missing file"):
        read_crisismmd(real_release)  # the default damage files are not in this release
    path = real_release / AGREED / "task_humanitarian_text_img_agreed_lab_dev.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[5].split("\t")
    fields[5] = "aliens"
    lines[5] = "\t".join(fields)
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="unknown humanitarian label 'aliens'") as err:
        read_task_file(path, "humanitarian")
    assert err.value.line == 6 and err.value.field == "label"


def test_twin_round_trips(tmp_path):
    root = ensure_crisismmd(tmp_path / "twin", num_tweets=60, image_size=32, seed=1)
    meta = __import__("json").loads((root / "synthetic_meta.json").read_text())["summary"]
    for release, files in RELEASES.items():
        index = read_crisismmd(root, release=release)
        assert index.stats["missing_images"] == 0 and index.stats["split_conflicts"] == 0
        for task in TASKS:
            expected = {split: meta["rows"][files[task].format(split=split)] for split in SPLITS}
            assert index.stats["rows"][task] == expected
    assert ensure_crisismmd(tmp_path / "twin", num_tweets=60, image_size=32, seed=1) == root  # cached


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def twin_rows(tmp_path_factory) -> dict[str, list[dict[str, str]]]:
    """The rows of every file of a twin of 400 tweets (16 px: the labels are the point), all splits."""
    root = tmp_path_factory.mktemp("twin") / "t"
    write_twin(root, num_tweets=400, image_size=16, seed=2)
    return {
        f"{release}/{task}": [
            r for split in SPLITS for r in read_rows(root / files[task].format(split=split))
        ]
        for release, files in RELEASES.items()
        for task in TASKS
    }


def test_twin_has_the_release_label_structure(twin_rows):
    """The twin's design (docs/crisismmd.md): text and image views that disagree on the release's shares
    of pairs, the pair label one of the two views, agreed files = the agreeing pairs, damage only for
    images whose image view is infrastructure damage, humanitarian very imbalanced."""
    info, human = twin_rows["all/informative"], twin_rows["all/humanitarian"]
    assert len(info) == len(human)  # every pair in both all-data files
    for rows in (info, human):
        assert all(r["label"] in (r["label_text"], r["label_image"]) for r in rows)
        assert all(
            (r["label_text"] == r["label_image"]) == (r["label_text_image"] == "Positive") for r in rows
        )
    agree_info = sum(r["label_text"] == r["label_image"] for r in info) / len(info)
    agree_human = sum(r["label_text"] == r["label_image"] for r in human) / len(human)
    # release: 12,708 / 18,082 = 70.3 % and 8,079 / 18,082 = 44.7 % of the pairs agree (bounds: > 3 sd)
    assert 0.62 < agree_info < 0.79 and 0.36 < agree_human < 0.53
    for task in ("informative", "humanitarian"):
        agreed = {r["image_id"] for r in twin_rows[f"agreed/{task}"]}
        assert agreed == {
            r["image_id"] for r in twin_rows[f"all/{task}"] if r["label_text_image"] == "Positive"
        }
    infra = {r["image_id"] for r in human if r["label_image"] == "infrastructure_and_utility_damage"}
    assert {r["image_id"] for r in twin_rows["all/damage"]} == infra
    shares = {c: sum(r["label"] == c for r in human) / len(human) for c in HUMANITARIAN}
    assert max(shares.values()) == shares["not_humanitarian"] > 0.3
    assert sorted(shares.values())[3] < 0.05  # four classes under 5 % (release: under 1.5 %)
    severe = sum(r["label"] == "severe_damage" for r in twin_rows["all/damage"]) / len(infra)
    assert 0.5 < severe < 0.8  # release: 65 %


def test_twin_texts_name_their_event(twin_rows):
    from datamodules.synthetic.crisismmd import _EVENT_TAGS, _HAZARD_WORDS, EVENTS

    for r in twin_rows["all/informative"]:
        words = set(_HAZARD_WORDS[EVENTS[r["event_name"]][0]]) | {_EVENT_TAGS[r["event_name"]]}
        assert any(w in r["tweet_text"] for w in words), r


def test_scale_twin_links_a_few_jpegs_and_reads_at_its_size(tmp_path):
    from datamodules.crisismmd import CrisisMMDDataModule
    from datamodules.synthetic.crisismmd import SCALE_TEMPLATES, write_scale_twin

    root = tmp_path / "scale"
    result = write_scale_twin(root, fraction=0.02, seed=0)
    assert result["items"] == round(0.02 * 18082) and result["experiment"] == "crisismmd_real"
    assert f"data.root={root}" in result["overrides"]
    images = list((root / "CrisisMMD_v2.0").rglob("*.jpg"))
    assert len(images) == result["items"]
    assert len({p.stat().st_ino for p in images}) <= SCALE_TEMPLATES and all(
        p.stat().st_nlink > 1 for p in images
    )
    header = (root / ALL_FILES["informative"].format(split="train")).read_text().split("\n")[0].split("\t")
    assert header == REAL_HEADER
    assert write_scale_twin(root, fraction=0.02, seed=0) == result  # written once
    dm = CrisisMMDDataModule(str(root), release="all", split_mode="official", text_encoder="bilstm")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.data_train) + len(dm.data_val) + len(dm.data_test) == result["items"]
