"""MS-COCO 2014 reader: the real excerpts, broken files, caption counts and the paired-fraction split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.coco import (
    AlternatingBatches,
    CaptionedImageRows,
    CocoDataModule,
    PartlyPairedCaptions,
    five_captions,
    read_coco,
    read_coco_captions,
    read_karpathy_split,
    split_pairs,
)
from datamodules.errors import DatasetFormatError
from datamodules.preprocessing.images import ImageTransforms
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
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "caption": "x"}]}',
            "image_id",
        ),
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
    with pytest.raises(DatasetFormatError, match="invalid JSON") as err:
        read_karpathy_split(path)
    assert err.value.line == 1
    path.write_text('{"images": [{"split": "holdout", "cocoid": 1, "filepath": "x", "filename": "y"}]}')
    with pytest.raises(DatasetFormatError, match=r"images\[0\].*holdout"):
        read_karpathy_split(path)
    with pytest.raises(DatasetFormatError, match="missing file"):
        read_coco_captions(tmp_path / "nothing.json")


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25, 0.1])
def test_pair_split_uses_every_remaining_image_and_caption_and_is_seeded(fraction) -> None:
    paired, images, captions = split_pairs(1000, fraction, seed=3)
    assert len(paired) == round(fraction * 1000)
    # issue 6: the remaining images and the remaining captions are both used (all of them)
    assert images.tolist() == captions.tolist() and len(images) == 1000 - len(paired)
    union = np.concatenate([paired, images])
    assert (
        len(union) == len(set(union.tolist())) == 1000
    )  # pairs and the unpaired pool cover every image once
    assert all(
        (a == b).all() for a, b in zip(split_pairs(1000, fraction, seed=3), (paired, images, captions))
    )
    assert not (split_pairs(1000, fraction, seed=4)[0] == paired).all() or fraction == 1.0


class FakeImages:
    """Stands in for DecodedImages: returns the index, so an item tells which image it holds."""

    def load(self, i: int, path: Path) -> int:
        return i


def partly_paired(n: int, fraction: float, use_unpaired: bool = True) -> PartlyPairedCaptions:
    paths = np.array([f"{i}.jpg" for i in range(n)], dtype=np.bytes_)
    ids = np.broadcast_to(np.arange(n)[:, None, None], (n, 5, 3))  # every token of image i's captions is i
    return PartlyPairedCaptions(
        CaptionedImageRows(".", paths, ids),
        split_pairs(n, fraction, seed=1),
        lambda x: x,
        FakeImages(),
        use_unpaired,
    )


def test_unpaired_rows_use_every_image_and_never_their_own_captions() -> None:
    data = partly_paired(40, 0.25)
    paired, pool, _ = (set(a.tolist()) for a in split_pairs(40, 0.25, seed=1))
    assert len(data) == 10 + 30  # every pair, then one row per remaining image
    torch.manual_seed(0)
    rows = [data[k] for k in range(len(data))] + [data[k] for k in range(10, len(data)) for _ in range(30)]
    pairs = [r for r in rows if r["paired"]]
    assert {r["image"] for r in pairs} == paired and all(int(r["ids"][0]) == r["image"] for r in pairs)
    unpaired = [r for r in rows if not r["paired"]]
    assert {r["image"] for r in unpaired} == pool  # every remaining image's pixels
    assert {int(r["ids"][0]) for r in unpaired} == pool  # every remaining image's captions
    assert all(int(r["ids"][0]) != r["image"] for r in unpaired)  # never next to its own image
    assert len(partly_paired(40, 1.0)) == 40
    assert len(partly_paired(3, 0.5)) == 2 + 0  # one remaining image has no other image's caption to take


def test_without_unpaired_the_training_set_is_the_pairs_alone() -> None:
    data = partly_paired(40, 0.25, use_unpaired=False)
    assert len(data) == 10 and all(data[k]["paired"] for k in range(10))


# ----------------------------------------------------------------------------- a hand-made release on disk
def write_release(
    root: Path,
    train: dict[int, int],
    val: dict[int, int],
    karpathy: list[tuple] | None = None,
    images: bool = True,
    extra_images: dict[str, list[dict]] | None = None,
) -> Path:
    """``train``/``val``: image id -> caption count; ``karpathy``: (cocoid, split[, folder, file]) records."""
    (root / "annotations").mkdir(parents=True)
    folder_of = {}
    for folder, content in (("train2014", train), ("val2014", val)):
        (root / folder).mkdir()
        entries = [{"id": i, "file_name": f"COCO_{folder}_{i:012d}.jpg"} for i in content]
        entries += (extra_images or {}).get(folder, [])
        annotations = [
            {"image_id": i, "caption": f"caption {k} of {i}"} for i, n in content.items() for k in range(n)
        ]
        content_json = json.dumps({"images": entries, "annotations": annotations})
        (root / "annotations" / f"captions_{folder}.json").write_text(content_json)
        for i in content:
            folder_of[i] = folder
            if images:
                (root / folder / f"COCO_{folder}_{i:012d}.jpg").write_bytes(b"jpeg")
    if karpathy is None:
        return None
    records = []
    for record in karpathy:
        cocoid, split = record[:2]
        folder = record[2] if len(record) > 2 else folder_of.get(cocoid, "val2014")
        filename = record[3] if len(record) > 3 else f"COCO_{folder}_{cocoid:012d}.jpg"
        records.append({"cocoid": cocoid, "split": split, "filepath": folder, "filename": filename})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": records}))
    return path


KARPATHY = [(1, "train"), (2, "train"), (3, "restval"), (4, "val"), (5, "test")]


def test_missing_image_files_are_dropped_counted_and_logged(tmp_path, caplog) -> None:
    split = write_release(tmp_path, {1: 5, 2: 5}, {3: 5, 4: 5, 5: 5}, KARPATHY)
    (tmp_path / "train2014" / "COCO_train2014_000000000002.jpg").unlink()
    with caplog.at_level("WARNING"):
        splits, counts = read_coco(tmp_path, split)
    assert [i.cocoid for i in splits["train"]] == [1, 3] and counts["missing_image"] == 1
    assert "COCO_train2014_000000000002.jpg" in caplog.text
    splits, counts = read_coco(tmp_path, split, check_images=False)
    assert len(splits["train"]) == 3 and not counts["missing_image"]


@pytest.mark.parametrize(
    ("karpathy", "missing", "split", "why"),
    [
        ([(1, "train"), (4, "val")], None, "test", "list no usable rows"),  # an empty Karpathy test split
        (
            [(1, "train"), (4, "val"), (99, "test")],
            None,
            "test",
            "1 of 1 listed without 5 captions",
        ),  # unknown cocoid
        (KARPATHY, "val2014/COCO_val2014_000000000004.jpg", "val", "1 with the image file missing"),
    ],
)
def test_an_empty_split_names_the_split_file_and_counts(tmp_path, karpathy, missing, split, why) -> None:
    path = write_release(tmp_path, {1: 5, 2: 5}, {3: 5, 4: 5, 5: 5}, karpathy)
    if missing:
        (tmp_path / missing).unlink()
    with pytest.raises(DatasetFormatError, match=f"the {split} split is empty") as err:
        read_coco(tmp_path, path)
    assert err.value.path == path and why in str(err.value) and "captions_val2014.json" in str(err.value)


def test_an_empty_split_without_the_split_file(tmp_path) -> None:
    write_release(tmp_path, {1: 5}, {3: 5})  # one val2014 image: its halves leave val empty
    with pytest.raises(DatasetFormatError, match="the val split is empty") as err:
        read_coco(tmp_path, None)
    assert err.value.path.name == "captions_val2014.json"


def test_repeated_entries_are_read_once_and_contradictions_raise(tmp_path) -> None:
    same = {"train2014": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"}]}
    path = write_release(
        tmp_path / "same",
        {1: 5, 2: 5},
        {4: 5, 5: 5},
        KARPATHY[:2] + [(2, "train")] + KARPATHY[3:],
        extra_images=same,
    )
    splits, counts = read_coco(tmp_path / "same", path)
    assert counts["duplicate_image_entries"] == 1 and counts["duplicate_split_entries"] == 1
    assert [i.cocoid for i in splits["train"]] == [1, 2]

    other = {"train2014": [{"id": 1, "file_name": "other.jpg"}]}
    path = write_release(tmp_path / "other", {1: 5, 2: 5}, {4: 5, 5: 5}, KARPATHY, extra_images=other)
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] and images\[2\] give image id 1 two different file"
    ) as err:
        read_coco(tmp_path / "other", path)
    assert err.value.path.name == "captions_train2014.json"

    path = write_release(tmp_path / "split", {1: 5, 2: 5}, {4: 5, 5: 5}, [*KARPATHY, (1, "test")])
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] and images\[5\] give cocoid 1 two different"
    ) as err:
        read_coco(tmp_path / "split", path)
    assert err.value.path == path

    both = {"val2014": [{"id": 2, "file_name": "COCO_val2014_000000000002.jpg"}]}
    path = write_release(tmp_path / "both", {1: 5, 2: 5}, {4: 5, 5: 5}, KARPATHY, extra_images=both)
    with pytest.raises(DatasetFormatError, match="image id 2 .* is also in .*captions_train2014.json") as err:
        read_coco(tmp_path / "both", path)
    assert err.value.path.name == "captions_val2014.json"


def test_karpathy_path_mismatch_is_counted(tmp_path) -> None:
    path = write_release(tmp_path, {1: 5, 2: 5}, {3: 5, 4: 5, 5: 5}, [(1, "train", "val2014"), *KARPATHY[1:]])
    splits, counts = read_coco(tmp_path, path)
    assert counts["karpathy_path_mismatch"] == 1 and splits["train"][0].path.parent.name == "train2014"


def test_restval_switch(tmp_path) -> None:
    path = write_release(tmp_path, {1: 5, 2: 5}, {3: 5, 4: 5, 5: 5}, KARPATHY)
    assert [i.cocoid for i in read_coco(tmp_path, path)[0]["train"]] == [1, 2, 3]
    splits, counts = read_coco(tmp_path, path, include_restval=False)
    assert [i.cocoid for i in splits["train"]] == [1, 2] and counts["restval_left_out"] == 1


def twin_datamodule(tmp_path, **kwargs) -> CocoDataModule:
    """A 120-image COCO twin (p = 0.25) read through the DataModule, set up."""
    root = tmp_path / "coco"
    dm = CocoDataModule(
        str(root),
        karpathy_split=str(root / "dataset_coco.json"),
        paired_fraction=0.25,
        vocab_size=100,
        max_length=12,
        transforms=ImageTransforms(32, 32),
        synthetic={"num_images": 120, "image_size": 32, "test_images": 20, "val_images": 20},
        **kwargs,
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_twin_reads_through_the_datamodule(tmp_path) -> None:
    root = tmp_path / "coco"
    dm = twin_datamodule(tmp_path)
    # the twin's 4 odd training images: two with 4 captions (dropped), two with 6 (trimmed)
    assert dm.counts["dropped_few_captions"] == 2 and dm.counts["trimmed"] == 2
    paired, images, captions = dm.pairs
    assert len(paired) == round(0.25 * 78) and len(images) == len(captions) == 78 - len(paired)
    items = [dm.data_train[k] for k in range(len(dm.data_train))]
    assert sum(bool(i["paired"]) for i in items) == len(paired) and len(items) == 78
    assert items[0]["image"].shape == (3, 32, 32) and items[0]["ids"].shape == (12,)
    assert dm.data_test[0]["ids"].shape == (5, 12) and len(dm.data_test) == 20
    splits, _ = read_coco(root, None)  # without the split file: val2014 halved
    assert len(splits["val"]) + len(splits["test"]) == 40


def test_datamodule_switches_reach_the_training_set(tmp_path) -> None:
    root = tmp_path / "coco"
    synthetic = {"num_images": 120, "image_size": 32, "test_images": 20, "val_images": 20}
    dm = CocoDataModule(
        str(root),
        karpathy_split=str(root / "dataset_coco.json"),
        paired_fraction=0.25,
        use_unpaired=False,
        batch_composition="mixed",
        vocab_size=100,
        max_length=12,
        transforms=ImageTransforms(32, 32),
        synthetic=synthetic,
    )
    dm.prepare_data()
    dm.setup()
    assert len(dm.data_train) == round(0.25 * 78) and all(
        dm.data_train[k]["paired"] for k in range(len(dm.data_train))
    )
    # Equal steps (the default): an epoch draws one row per training image, ~1/p passes over the pairs.
    epoch = list(dm.train_dataloader().sampler)
    assert len(epoch) == 78 and set(epoch) == set(range(len(dm.data_train)))
    dm.hparams.equal_steps = False
    assert len(dm.train_dataloader().sampler) == len(dm.data_train)


# ----------------------------------------------------------------------------- batches, index, twins
class RankSampler:
    """What AlternatingBatches reads of the rank's EpochFractionSampler."""

    def __init__(self, rank: int, world: int, seed: int = 0) -> None:
        self.rank, self.num_replicas, self.seed, self.epoch = rank, world, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def alternating(data: PartlyPairedCaptions, rank: int, world: int, steps: int, share: float = 0.5):
    return AlternatingBatches(RankSampler(rank, world), data.num_pairs, data.num_unpaired, 8, steps, share)


@pytest.mark.parametrize("share", [0.5, 0.25, 1.0])
def test_alternating_batches_are_whole_and_keep_the_pair_share(share) -> None:
    data = partly_paired(200, 0.25)  # 50 pairs, 150 unpaired rows
    ranks = [alternating(data, rank, 2, steps=24, share=share) for rank in range(2)]
    batches = [list(b) for b in ranks]
    kinds = [[all(k < data.num_pairs for k in batch) for batch in rank] for rank in batches]
    for rank in batches:  # never mixed
        assert all(all(k < 50 for k in b) or all(k >= 50 for k in b) for b in rank)
        assert all(len(b) == 8 for b in rank)
    assert kinds[0] == kinds[1] and sum(kinds[0]) == round(share * 24)  # the same kinds on every rank
    # paired steps are spread over the epoch: no two in a row at a share of 1/2
    if share == 0.5:
        assert all(a != b for a, b in zip(kinds[0], kinds[0][1:]))
    for step in range(24):  # the ranks' halves of a global batch are disjoint
        assert not set(batches[0][step]) & set(batches[1][step])
    # the pairs' stream (global batches in order, rank 0's rows first) draws 48 of the 50 pairs (three
    # global batches of 16) before a fresh permutation starts
    stream = [k for step, is_paired in enumerate(kinds[0]) if is_paired for b in batches for k in b[step]]
    assert len(set(stream[:48])) == 48
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != batches[0]  # a fresh order every epoch


def test_without_unpaired_rows_every_batch_is_paired() -> None:
    data = partly_paired(40, 0.25, use_unpaired=False)
    batches = list(alternating(data, 0, 1, steps=5))
    assert len(batches) == 5 and all(k < data.num_pairs for b in batches for k in b)
    few = alternating(partly_paired(20, 0.25), 0, 1, steps=4)  # 5 pairs: smaller paired batches
    assert [len(b) for b in few] == [5 if paired else 8 for paired in few.kinds()]


def test_datamodule_alternates_by_default_and_counts_equal_steps(tmp_path) -> None:
    dm = twin_datamodule(tmp_path, batch_size=4)
    loader = dm.train_dataloader()
    batches = list(loader.batch_sampler)
    assert len(batches) == round(78 / 4)  # equal steps: one step per batch of training images
    paired = [all(dm.data_train[k]["paired"] for k in b) for b in batches]
    assert sum(paired) == round(0.5 * len(batches))
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["ids"].shape[1] <= 12
    assert batch["paired"].all() or not batch["paired"].any()
    dm.hparams.equal_steps = False  # one pass over the 20 pairs, with as many unpaired batches
    assert len(dm.train_dataloader().batch_sampler) == round(20 / 4 / 0.5)


def test_collate_cuts_padding_only() -> None:
    from datamodules.coco import collate_trimmed

    items = [
        {"ids": torch.tensor([3, 4, 0, 0, 0]), "paired": True},
        {"ids": torch.tensor([5, 6, 7, 0, 0]), "paired": False},
    ]
    batch = collate_trimmed(items)
    assert batch["ids"].tolist() == [[3, 4, 0], [5, 6, 7]] and batch["paired"].tolist() == [True, False]
    evaluation = collate_trimmed([{"ids": torch.tensor([[1, 0, 0], [2, 2, 0]])}])
    assert evaluation["ids"].shape == (1, 2, 2)


def test_index_is_built_once_and_rebuilt_when_the_release_changes(tmp_path) -> None:
    split = write_release(
        tmp_path, {1: 5, 2: 5, 3: 6}, {4: 5, 5: 5}, [*KARPATHY[:2], (3, "train"), *KARPATHY[3:]]
    )
    dm = CocoDataModule(str(tmp_path), karpathy_split=str(split), vocab_size=50, max_length=8)
    dm.prepare_data()
    folder = dm.index_folder()
    manifest = folder / "manifest.json"
    built = manifest.stat().st_mtime_ns
    dm.prepare_data()  # current: nothing rebuilt
    assert manifest.stat().st_mtime_ns == built
    dm.setup()
    assert len(dm.data_train) == 3 and dm.counts["trimmed"] == 1
    assert dm.data_test.images.ids(0).shape[0] == 5 and folder.parent == tmp_path / "index"
    (tmp_path / "train2014" / "COCO_train2014_000000000002.jpg").unlink()  # the image folder changed
    again = CocoDataModule(str(tmp_path), karpathy_split=str(split), vocab_size=50, max_length=8)
    again.prepare_data()
    again.setup()
    assert len(again.data_train) == 2 and again.counts["missing_image"] == 1
    other = CocoDataModule(str(tmp_path), karpathy_split=str(split), vocab_size=50, max_length=6)
    assert other.index_folder() != folder  # other settings: an index of their own


def test_twin_words_cover_every_colour_and_shape() -> None:
    from datamodules.synthetic.coco import COLOUR_WORDS, SHAPE_WORDS
    from datamodules.synthetic.world import COLOURS, SHAPES

    assert set(COLOUR_WORDS) == set(COLOURS) and set(SHAPE_WORDS) == set(SHAPES)


def test_scale_twin_is_read_by_the_real_data_config(tmp_path) -> None:
    from datamodules.synthetic.coco import REAL_SIZES, write_scale_twin
    from experiments.common import build
    from tests.test_configs import compose_train

    info = write_scale_twin(tmp_path / "scale", fraction=0.002, seed=0)
    train, val = (round(0.002 * REAL_SIZES[f]["images"]) for f in ("train2014", "val2014"))
    assert info["items"] == train + val and info["experiment"] == "retrieval_coco"
    paths = {p.stat().st_ino for p in (tmp_path / "scale").glob("*2014/*.jpg")}
    assert len(paths) <= 16  # hard links to a few JPEGs
    cfg = compose_train(f"experiment={info['experiment']}", *info["overrides"])
    dm = build(cfg.data)
    dm.prepare_data()
    dm.setup()
    held_out = round(0.002 * 10_000)
    assert len(dm.data_val) == held_out // 2 and len(dm.data_test) == held_out - held_out // 2
    assert len(dm.data_train.images) == train + val - held_out  # train2014 + restval
    assert dm.counts["trimmed"] >= 1  # the real files' images with a sixth caption
