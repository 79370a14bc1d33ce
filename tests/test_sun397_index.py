"""The SUN397 DataModule's index and splits: built once in ``prepare`` (images checked there), loaded by
``setup`` without opening an image, rebuilt when the release changes; validation (and the random test
split) by a hash of each image path, so removing an image never moves another between the splits;
the scale twin in the release's layout, read by the real data config."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import datamodules.sun397 as sun397
from datamodules.errors import DatasetFormatError
from datamodules.sun397 import Sun397DataModule, path_numbers, read_class_names
from datamodules.synthetic.sun397 import scale_class_counts, write_scale_twin, write_sun397

CONF_HASHTAGS = Path(__file__).resolve().parents[1] / "conf" / "hashtags"
AUTHOR = {
    "mapping_file": str(CONF_HASHTAGS / "sun397_hashtags_author.csv"),
    "class_column": "raw_names",
    "hashtag_column": "tags",
}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sun397_index") / "release"
    write_sun397(root, images_per_class=20, image_size=16, num_classes=8, corrupt_images=1)
    return root


def copy_of(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(root, out, ignore=shutil.ignore_patterns(sun397.INDEX_FILE))
    return out


def datamodule(root: Path, **kwargs) -> Sun397DataModule:
    dm = Sun397DataModule(str(root), hashtags=AUTHOR, batch_size=4, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def members(dm: Sun397DataModule) -> dict[str, set[str]]:
    return {
        name: {p.decode() for p in getattr(dm, f"data_{name}").paths} for name in ("train", "val", "test")
    }


def test_setup_loads_the_index_and_opens_no_image(release, tmp_path, monkeypatch):
    root = copy_of(release, tmp_path)
    prepared = Sun397DataModule(str(root), hashtags=AUTHOR)
    prepared.prepare_data()
    assert (root / sun397.INDEX_FILE).is_file()

    def no_image_checks(path):
        raise AssertionError(f"setup opened {path}")

    monkeypatch.setattr(sun397, "image_is_readable", no_image_checks)
    dm = Sun397DataModule(str(root), hashtags=AUTHOR)
    dm.prepare_data()  # current index: returns at once
    dm.setup("fit")
    assert dm.stats["unreadable"] == 1 and dm.stats["images_on_disk"] == 8 * 20
    assert len(dm.data_train) + len(dm.data_val) + len(dm.data_test) == 8 * 20 - 1
    assert isinstance(dm.data_train.paths, np.ndarray) and dm.data_train.paths.dtype.kind == "S"


def test_setup_without_a_current_index_says_to_prepare(release, tmp_path):
    root = copy_of(release, tmp_path)
    with pytest.raises(DatasetFormatError, match="run prepare_data"):
        Sun397DataModule(str(root), hashtags=AUTHOR).setup("fit")


def test_a_changed_release_rebuilds_the_index(release, tmp_path):
    root = copy_of(release, tmp_path)
    datamodule(root)
    first = read_class_names(root / "Partitions" / "ClassName.txt")[0].lstrip("/")
    added = f"{first}/sun_aaaaaaaaaaaaaaaa.jpg"
    shutil.copy(next((root / "SUN397" / first).glob("sun_*.jpg")), root / "SUN397" / added)
    dm = datamodule(root)
    assert dm.stats["images_on_disk"] == 8 * 20 + 1
    assert sum(added in split for split in members(dm).values()) == 1


@pytest.mark.parametrize("victim_split", ["train", "val"])
def test_removing_an_image_moves_no_other_between_train_and_val(release, tmp_path, victim_split):
    """The old split (a seeded permutation of the surviving images) reshuffled validation when one image
    went missing; membership by a hash of the path does not."""
    root = copy_of(release, tmp_path)
    before = members(datamodule(root, split="partition", val_fraction=0.25))
    victim = sorted(before[victim_split])[0]
    os.remove(root / "SUN397" / victim)
    after = members(datamodule(root, split="partition", val_fraction=0.25))
    for name in ("train", "val", "test"):
        assert after[name] == before[name] - {victim}, name


def test_random_split_moves_at_most_one_image_when_one_disappears(release, tmp_path):
    root = copy_of(release, tmp_path)
    before = members(datamodule(root, split="random"))
    victim = sorted(before["train"])[3]
    os.remove(root / "SUN397" / victim)
    after = members(datamodule(root, split="random"))
    moved = {p for name in after for p in after[name] - before[name]}
    assert len(moved) <= 1
    assert after["val"] - before["val"] <= moved and before["val"] - after["val"] <= moved | {victim}


def test_path_numbers_are_the_keyed_hash_of_the_path_alone():
    paths = np.array([b"a/abbey/sun_x.jpg", b"b/bar/sun_y.jpg", b"c/cafe/sun_z.jpg"])
    numbers = path_numbers(paths, "k")
    by_hand = int.from_bytes(hashlib.blake2b(b"b/bar/sun_y.jpg", digest_size=8, key=b"k").digest(), "big")
    assert numbers[1] == pytest.approx(by_hand / 2**64)
    assert path_numbers(paths[::-1], "k")[::-1].tolist() == numbers.tolist()  # no dependence on the others
    assert path_numbers(paths, "other key").tolist() != numbers.tolist()
    assert ((numbers >= 0) & (numbers < 1)).all()


def test_scale_twin_is_the_release_layout_with_hard_links(tmp_path):
    fraction = 0.02
    info = write_scale_twin(tmp_path / "scale", fraction=fraction)
    root = tmp_path / "scale"
    classes = read_class_names(root / "Partitions" / "ClassName.txt")
    assert len(classes) == 397 and classes == sorted(classes)
    assert (root / "SUN397" / "ClassName.txt").read_text() == (
        root / "Partitions" / "ClassName.txt"
    ).read_text()
    images = [p for p in (root / "SUN397").rglob("sun_*.jpg")]
    assert len(images) == info["items"] == round(fraction * 108_754) == scale_class_counts(fraction).sum()
    inodes = {p.stat().st_ino for p in images}
    assert len(inodes) <= 16 and all(p.stat().st_nlink > 1 for p in images[:50])
    per_class = max(1, round(50 * fraction))
    for n in (1, 10):
        for word in ("Training", "Testing"):
            lines = (root / "Partitions" / f"{word}_{n:02d}.txt").read_text().splitlines()
            assert len(lines) == 397 * per_class and lines[0].startswith("/a/abbey/sun_")
    assert info["experiment"] == "hashtag_sun397" and info["overrides"] == [f"data.root={root}"]
    with pytest.raises(FileExistsError):
        write_scale_twin(root, fraction=fraction)


def test_scale_twin_counts_follow_the_real_release():
    full = scale_class_counts(1.0)
    assert full.sum() == 108_754 and len(full) == 397 and full.min() >= 100
    assert (scale_class_counts(1.0, seed=0) == full).all()


def test_real_data_config_reads_the_scale_twin(tmp_path):
    from experiments.common import build
    from tests.test_configs import compose_train

    info = write_scale_twin(tmp_path / "scale", fraction=0.02)
    cfg = compose_train(f"experiment={info['experiment']}", *info["overrides"])
    dm = build(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.data_train) + len(dm.data_val) + len(dm.data_test) == info["items"]
    assert dm.stats["unreadable"] == 0 and dm.stats["classes_without_images"] == 0
    assert len(dm.hashtags) == 21 and dm.hashtags[-1] == "other"
