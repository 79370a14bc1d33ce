"""MS-COCO 2014 reader: the real excerpts, broken files, caption counts and the paired-fraction split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datamodules.coco import CocoDataModule, five_captions, read_coco, read_coco_captions, read_karpathy_split, split_pairs
from datamodules.errors import DatasetFormatError
from datamodules.transforms import ImageTransforms
from tests.conftest import real_format_file



def real_file(relative: str) -> Path:
    return real_format_file("mscoco", relative)


def test_reads_the_real_captions_excerpt() -> None:
    files, captions = read_coco_captions(real_file("annotations/captions_val2014.json"))
    assert len(files) == 50 and sum(len(c) for c in captions.values()) == 250
    assert files[318219] == "COCO_val2014_000000318219.jpg"
    assert captions[331352][0] == "A small closed toilet in a cramped space."
    assert all(not c.endswith(" ") for caps in captions.values() for c in caps)  # trailing spaces stripped
    counts = Counter()
    assert len(five_captions(captions, counts)) == 50 and not counts


def test_reads_the_real_karpathy_record() -> None:
    split = read_karpathy_split(real_file("karpathy_splits/dataset_coco.json"))
    assert split == {391895: ("val2014", "COCO_val2014_000000391895.jpg", "test")}


def test_other_than_five_captions_are_trimmed_or_dropped_and_counted() -> None:
    counts = Counter()
    kept = five_captions({1: list("abcdef"), 2: list("abcd"), 3: list("abcde")}, counts)
    assert kept == {1: tuple("abcde"), 3: tuple("abcde")}
    assert counts == {"trimmed": 1, "dropped_few_captions": 1}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1}]}', "caption"),
        ('{"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []}', "id"),
        ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}', "image_id"),
        ('{"images": []}', "annotations"),
    ],
)
def test_broken_captions_file_names_file_and_field(tmp_path, content, field) -> None:
    path = tmp_path / "captions_val2014.json"
    path.write_text(content)
    with pytest.raises(DatasetFormatError) as err:
        read_coco_captions(path)
    assert err.value.path == path and err.value.field == field and str(path) in str(err.value)


def test_broken_json_and_missing_file(tmp_path) -> None:
    path = tmp_path / "dataset_coco.json"
    path.write_text('{"images": [{"split": "train"')
    with pytest.raises(DatasetFormatError, match="not valid JSON"):
        read_karpathy_split(path)
    path.write_text('{"images": [{"split": "holdout", "cocoid": 1, "filepath": "x", "filename": "y"}]}')
    with pytest.raises(DatasetFormatError, match=r"images\[0\].*holdout"):
        read_karpathy_split(path)
    with pytest.raises(DatasetFormatError, match="missing file"):
        read_coco_captions(tmp_path / "nothing.json")


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.1])
def test_pair_split_is_disjoint_covering_and_seeded(fraction) -> None:
    paired, images, captions = split_pairs(1000, fraction, seed=3)
    assert len(paired) == round(fraction * 1000)
    assert abs(len(images) - len(captions)) <= 1
    union = np.concatenate([paired, images, captions])
    assert len(union) == len(set(union.tolist())) == 1000  # three disjoint pools covering every image
    assert all((a == b).all() for a, b in zip(split_pairs(1000, fraction, seed=3), (paired, images, captions)))
    assert not (split_pairs(1000, fraction, seed=4)[0] == paired).all() or fraction == 1.0


def test_twin_reads_through_the_datamodule(tmp_path) -> None:
    root = tmp_path / "coco"
    dm = CocoDataModule(str(root), karpathy_split=str(root / "dataset_coco.json"), paired_fraction=0.25,
                        vocab_size=100, max_length=12, transforms=ImageTransforms(32, 32),
                        synthetic={"num_images": 120, "image_size": 32, "test_images": 20, "val_images": 20})
    dm.prepare_data()
    dm.setup()
    # the twin's 4 odd training images: two with 4 captions (dropped), two with 6 (trimmed)
    assert dm.counts["dropped_few_captions"] == 2 and dm.counts["trimmed"] == 2
    paired, images, captions = dm.pairs
    assert len(paired) == round(0.25 * 78)
    items = [dm.data_train[k] for k in range(len(dm.data_train))]
    assert sum(bool(i["paired"]) for i in items) == len(paired)
    assert items[0]["image"].shape == (3, 32, 32) and items[0]["ids"].shape == (12,)
    assert dm.data_test[0]["ids"].shape == (5, 12) and len(dm.data_test) == 20
    splits, _ = read_coco(root, None)  # without the split file: val2014 halved
    assert len(splits["val"]) + len(splits["test"]) == 40
