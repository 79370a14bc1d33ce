"""The SUN397 reader on the real excerpts and on a small twin in the release layout (with a
class-list entry without images and an unreadable image)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datamodules.errors import DatasetFormatError
from datamodules.sun397 import (
    class_targets,
    read_class_names,
    read_hashtag_mapping,
    read_hashtag_vocabulary,
    read_partition,
    read_sun397,
)
from datamodules.synthetic.sun397 import ensure_sun397
from tests.conftest import real_format_file


def _real(name: str) -> Path:
    return real_format_file("sun397", name)


def test_real_class_list_and_partitions_parse():
    classes = read_class_names(_real("ClassName.txt"))
    assert len(classes) == 397 and classes[0] == "/a/abbey" and classes[-1] == "/y/youth_hostel"
    assert "/a/apartment_building/outdoor" in classes
    index = {c: i for i, c in enumerate(classes)}
    for name in ("Partitions/Training_01.txt", "Partitions/Testing_01.txt"):
        rows = read_partition(_real(name), index)
        assert len(rows) == 500 and rows[0][0].startswith("a/abbey/sun_")
        assert {classes[c] for _, c in rows} == set(classes[:10])
        assert rows[400][0].startswith("a/apartment_building/outdoor/")


def test_every_real_class_is_in_the_committed_mapping():
    classes = read_class_names(_real("ClassName.txt"))
    hashtags = Path(__file__).resolve().parents[1] / "conf" / "hashtags"
    mapping = read_hashtag_mapping(hashtags / "sun397_hashtags.csv")
    assert set(mapping) == set(classes)
    vocab = read_hashtag_vocabulary(hashtags / "wordnet" / "rules.yaml")
    assert len(vocab) == 21 and vocab[-1] == "other"
    targets = class_targets(classes, mapping, vocab)
    assert targets[classes.index("/s/shoe_shop")] == vocab.index("shopping")


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("/a/abbey\n/a/airport terminal\n", 2, "expected a class path"),
        ("/a/abbey\n/b/alley\n", 2, "wrong letter"),
        ("/a/abbey\n/a/alley\n/a/abbey\n", 3, "repeats line 1"),
        ("/a/abbey\n\n/a/alley\n", 2, "expected a class path"),
    ],
)
def test_broken_class_list(tmp_path, text, line, match):
    path = tmp_path / "ClassName.txt"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=match) as err:
        read_class_names(path)
    assert err.value.line == line and err.value.path == path


@pytest.mark.parametrize(
    "text,line,match",
    [
        ("/a/abbey/sun_a.jpg\n/a/alley/sun_b.txt\n", 2, "expected /<class path>"),
        ("/a/abbey/sun_a.jpg\n/z/zoo/sun_b.jpg\n", 2, "not in the class list"),
        ("/a/abbey/sun_a.jpg\n/a/abbey/sun_a.jpg\n", 2, "repeats line 1"),
    ],
)
def test_broken_partition(tmp_path, text, line, match):
    path = tmp_path / "Training_01.txt"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=match) as err:
        read_partition(path, {"/a/abbey": 0, "/a/alley": 1})
    assert err.value.line == line


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sun397") / "twin"
    return ensure_sun397(
        root, images_per_class=6, image_size=24, num_classes=6, empty_classes=1, corrupt_images=1
    )


def test_twin_layout_is_the_release_layout(twin):
    meta = json.loads((twin / "synthetic_meta.json").read_text())
    classes = read_class_names(twin / "Partitions" / "ClassName.txt")
    assert classes == sorted(classes) and len(classes) == 7
    assert (twin / "SUN397" / "ClassName.txt").read_text() == (
        twin / "Partitions" / "ClassName.txt"
    ).read_text()
    for n in range(1, 11):
        assert (twin / "Partitions" / f"Training_{n:02d}.txt").is_file()
    image = next((twin / "SUN397").rglob("sun_*.jpg"))
    assert len(image.stem) == len("sun_") + 16
    assert meta["empty_classes"] and meta["corrupt_images"]


def test_reader_counts_empty_classes_and_unreadable_images(twin):
    index = read_sun397(twin, split="partition", partition=3)
    assert index.stats["classes_without_images"] == 1
    assert index.stats["unreadable_train"] + index.stats["unreadable_test"] == 1
    assert index.stats["kept_train"] + index.stats["kept_test"] == 6 * 6 - 1
    train = {p for p, _ in index.records["train"]}
    assert not train & {p for p, _ in index.records["test"]}


def test_random_split_is_seeded_80_20(twin):
    a = read_sun397(twin, split="random", split_seed=1, check_images=False)
    b = read_sun397(twin, split="random", split_seed=1, check_images=False)
    c = read_sun397(twin, split="random", split_seed=2, check_images=False)
    assert a.records == b.records and a.records != c.records
    assert len(a.records["test"]) == round(0.2 * 36) and len(a.records["train"]) == 36 - round(0.2 * 36)


def test_partition_entry_missing_on_disk_is_dropped_and_counted(twin, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(twin, copy)
    first = (copy / "Partitions" / "Training_01.txt").read_text().splitlines()[0]
    (copy / "SUN397" / first.lstrip("/")).unlink()
    index = read_sun397(copy, split="partition", partition=1, check_images=False)
    assert index.stats["missing_train"] == 1


def test_missing_image_folder_is_a_format_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="image folder not found"):
        read_sun397(tmp_path)
