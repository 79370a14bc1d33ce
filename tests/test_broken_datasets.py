"""Broken releases give a DatasetFormatError naming the file (and line or field), or a logged count.

One test per defect of the readers' review (tiny files or tiny twins in ``tmp_path``, no training).
"""

from __future__ import annotations

import datetime
import json
import logging
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from datamodules.base import DecodedImages, image_is_readable
from datamodules.crisismmd import CrisisMMDDataModule, read_crisismmd
from datamodules.errors import DatasetFormatError, read_json, require_rows
from datamodules.imagenet_captions.captioned_images import CaptionedImagesDataModule
from datamodules.imagenet_captions.reader import read_imagenet_captions, read_synset_mapping
from datamodules.imagenet_captions.relevance import RelevanceDataModule
from datamodules.imagenet_captions.relevance_dataset import (
    ITEMS_FILE,
    read_relevance_dataset,
    write_relevance_dataset,
)
from datamodules.nuswide import INDEX_FILENAME, NusWideDataModule, read_nuswide
from datamodules.samplers import EpochFractionSampler
from datamodules.sun397 import class_targets, read_hashtag_mapping, read_sun397
from datamodules.synthetic.crisismmd import write_crisismmd
from datamodules.synthetic.imagenet_captions import write_imagenet_captions
from datamodules.synthetic.nuswide import write_nuswide
from datamodules.synthetic.sun397 import write_sun397

TRAIN_LIST = Path("ImageList/TrainImagelist.txt")
TEST_LIST = Path("ImageList/TestImagelist.txt")
INFORMATIVE_TRAIN = Path("crisismmd_datasplit_agreed_label/task_informative_text_img_agreed_lab_train.tsv")


def raises(call, *words: str, line: int | None = None, field: str | None = None) -> DatasetFormatError:
    """Run ``call``; it must raise a DatasetFormatError whose message holds ``words`` (e.g. the file)."""
    with pytest.raises(DatasetFormatError) as info:
        call()
    message = str(info.value)
    assert all(str(w) in message for w in words), message
    if line is not None:
        assert info.value.line == line, message
    if field is not None:
        assert info.value.field == field, message
    return info.value


def jpeg(path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def truncate(path: Path, share: float = 0.6) -> Path:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * share)])
    return path


def copy_of(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / pristine.name))


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict[str, Path]:
    """Tiny twins of every dataset, written once; tests corrupt copies (:func:`copy_of`)."""
    base = tmp_path_factory.mktemp("twins")
    write_nuswide(base / "nuswide", num_images=40, image_size=16, seed=7)
    write_sun397(base / "sun397", images_per_class=4, image_size=16, num_classes=3)
    write_crisismmd(base / "crisismmd", num_tweets=40, image_size=16, seed=1)
    write_imagenet_captions(base / "ic", num_classes=2, num_captions=24, image_size=16)
    return {name: base / name for name in ("nuswide", "sun397", "crisismmd", "ic")}


# ---- shared helpers ------------------------------------------------------------------------------


def test_require_rows_names_split_files_and_counts(tmp_path):
    assert require_rows([1], "train", tmp_path / "a.txt") == [1]
    err = raises(
        lambda: require_rows(
            [], "test", tmp_path / "a.txt", tmp_path / "b.dat", dropped={"missing images": 3, "untagged": 0}
        ),
        "a.txt",
        "b.dat",
        "test split is empty",
        "3 missing images",
    )
    assert err.path == tmp_path / "a.txt" and "untagged" not in str(err)
    raises(lambda: require_rows([], "dev", tmp_path / "a.txt"), "list no usable rows")


def test_error_survives_a_worker_and_pickling(tmp_path):
    err = DatasetFormatError(tmp_path / "x.json", "bad", line=3)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is DatasetFormatError and str(copy) == str(err)
    assert (copy.path, copy.line, copy.field) == (err.path, 3, None)
    rebuilt = DatasetFormatError(str(err))  # how a DataLoader worker's error reaches the main process
    assert str(rebuilt) == str(err) and rebuilt.path is None


def test_non_utf8_json_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "c.json"
    data = b'[\n {"title": "caf\xe9"}\n]'
    path.write_bytes(data)
    raises(
        lambda: read_json(path, "a list"),
        str(path),
        "not valid UTF-8",
        f"byte offset {data.index(0xE9)}",
        line=2,
    )


def test_training_sampler_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match="empty dataset"):
        EpochFractionSampler(0)


# ---- 1. bad images -------------------------------------------------------------------------------


def test_corrupt_image_names_the_file_and_the_fix(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    raises(lambda: DecodedImages().load(0, bad), str(bad), "cannot read image", "delete it")
    assert "rebuild the index to drop it" not in str(raises(lambda: DecodedImages().load(0, bad)))


class _Images:
    def __init__(self, paths):
        self.paths, self.images = paths, DecodedImages()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return np.asarray(self.images.load(i, self.paths[i])).shape


def test_corrupt_image_through_a_loader_worker(tmp_path):
    bad = truncate(jpeg(tmp_path / "cut.jpg"))
    loader = DataLoader(_Images([jpeg(tmp_path / "good.jpg"), bad]), batch_size=2, num_workers=1)
    raises(lambda: next(iter(loader)), str(bad), "cannot read image")


def test_truncated_jpeg_is_caught_by_the_cheap_check(tmp_path):
    good = jpeg(tmp_path / "good.jpg", size=256)
    assert image_is_readable(good)
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(good.read_bytes() + b"\0" * 64)
    assert image_is_readable(padded)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes())
    for share in (0.6, 0.95):
        cut.write_bytes(good.read_bytes()[: int(good.stat().st_size * share)])
        assert not image_is_readable(cut), share


def test_sun397_drops_and_counts_a_truncated_jpeg(twins, tmp_path, caplog):
    root = copy_of(twins["sun397"], tmp_path)
    first = (root / "Partitions/Training_01.txt").read_text().splitlines()[0]
    truncate(jpeg(root / "SUN397" / first.lstrip("/"), size=128))
    with caplog.at_level(logging.WARNING, logger="datamodules.sun397"):
        index = read_sun397(root, split="partition")
    assert index.stats["unreadable_train"] == 1 and "1 unreadable image(s)" in caplog.text
    assert first.lstrip("/") in caplog.text


def _captioned(root: Path, **kwargs) -> CaptionedImagesDataModule:
    dm = CaptionedImagesDataModule(str(root), text_encoder="bilstm", text_min_freq=1, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


def test_captioned_images_drop_and_count_missing_images(twins, tmp_path, caplog):
    root = copy_of(twins["ic"], tmp_path)
    first = json.loads((root / "imagenet_captions.json").read_text())[0]
    (root / "train" / first["wnid"] / first["filename"]).unlink()
    with caplog.at_level(logging.WARNING, logger="datamodules.imagenet_captions.captioned_images"):
        dm = _captioned(root)
    assert "dropped 1 caption(s) whose image is missing" in caplog.text and first["filename"] in caplog.text
    assert len(dm.data_train) + len(dm.data_test) == 24 - 1
    for wnid in {p.parent.name for p in (root / "train").rglob("*.JPEG")}:
        shutil.rmtree(root / "train" / wnid)
    raises(
        lambda: _captioned(root), "imagenet_captions.json", "train split is empty", "images missing on disk"
    )


# ---- 2. empty splits -----------------------------------------------------------------------------


def test_nuswide_empty_or_all_untagged_test_split(twins, tmp_path):
    root = copy_of(twins["nuswide"], tmp_path)
    tags = root / "NUS_WID_Tags/Test_Tags1k.dat"
    tags.write_bytes(tags.read_bytes().replace(b"1", b"0"))
    raises(lambda: read_nuswide(root), root / TEST_LIST, "test split is empty", "images without tags")
    (root / TEST_LIST).write_bytes(b"")
    tags.write_bytes(b"")
    for labels in (root / "Groundtruth/TrainTestLabels").glob("*_Test.txt"):
        labels.write_bytes(b"")
    raises(lambda: read_nuswide(root), root / TEST_LIST, "test split is empty", "no usable rows")


def test_nuswide_every_train_image_missing(twins, tmp_path):
    root = copy_of(twins["nuswide"], tmp_path)
    shutil.rmtree(root / "Flickr")
    (root / "Flickr").mkdir()
    raises(lambda: read_nuswide(root), root / TRAIN_LIST, "train split is empty", "images missing on disk")


def test_sun397_empty_partition_files(twins, tmp_path):
    root = copy_of(twins["sun397"], tmp_path)
    for name in ("Testing_01.txt", "Training_01.txt"):
        (root / "Partitions" / name).write_bytes(b"")
        raises(lambda: read_sun397(root, split="partition"), root / "Partitions" / name, "split is empty")


def test_crisismmd_header_only_file_and_split_without_images(twins, tmp_path):
    root = copy_of(twins["crisismmd"], tmp_path)
    dev = root / "crisismmd_datasplit_agreed_label/task_humanitarian_text_img_agreed_lab_dev.tsv"
    original = dev.read_bytes()
    dev.write_bytes(original.split(b"\n")[0] + b"\n")
    raises(lambda: read_crisismmd(root), dev, "humanitarian dev split is empty")
    dev.write_bytes(original)
    index = read_crisismmd(root)
    for sample in index.samples:
        if sample.split == "test":
            (root / "CrisisMMD_v2.0" / sample.image).unlink()
    dm = CrisisMMDDataModule(str(root), text_encoder="bilstm", extra_modality=None)
    raises(lambda: dm.setup("fit"), "_test.tsv", "test split is empty", "samples whose image is missing")


def test_imagenet_captions_empty_list(twins, tmp_path):
    root = copy_of(twins["ic"], tmp_path)
    (root / "imagenet_captions.json").write_text("[]")
    raises(
        lambda: write_relevance_dataset(
            root / "imagenet_captions.json", root / "class_descriptions.json", tmp_path / "out"
        ),
        "imagenet_captions.json",
        "train split is empty",
    )


# ---- 3. JSON / CSV parsing -----------------------------------------------------------------------


def test_nuswide_corrupt_index_header(twins, tmp_path):
    root = copy_of(twins["nuswide"], tmp_path)
    (root / INDEX_FILENAME).write_text("{not json\n")
    raises(lambda: NusWideDataModule(str(root)).prepare_data(), root / INDEX_FILENAME, "invalid JSON", line=1)


@pytest.fixture(scope="module")
def relevance_dir(twins, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relevance")
    write_relevance_dataset(
        twins["ic"] / "imagenet_captions.json", twins["ic"] / "class_descriptions.json", out
    )
    return out


@pytest.mark.parametrize(
    "number, edit, words, field",
    [
        (3, lambda line: line[:30], ["invalid JSON"], None),
        (
            4,
            lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "split"}),
            ["missing field"],
            "split",
        ),
        (5, lambda line: json.dumps({**json.loads(line), "split": "dev"}), ["unknown split 'dev'"], "split"),
        (1, lambda line: line[:30], ["invalid JSON"], None),
    ],
)
def test_relevance_items_file_names_line_and_field(relevance_dir, tmp_path, number, edit, words, field):
    out = copy_of(relevance_dir, tmp_path)
    lines = (out / ITEMS_FILE).read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    (out / ITEMS_FILE).write_text("\n".join(lines) + "\n")
    raises(lambda: read_relevance_dataset(out), out / ITEMS_FILE, *words, line=number, field=field)


def test_relevance_module_with_a_broken_items_header(twins, relevance_dir, tmp_path):
    root = copy_of(twins["ic"], tmp_path)
    items = copy_of(relevance_dir, tmp_path / "built") / ITEMS_FILE
    items.write_text(items.read_text()[:30] + "\n")
    dm = RelevanceDataModule(str(root), dataset_dir=str(items.parent), text_encoder="bilstm")
    raises(dm.prepare_data, items, "invalid JSON", line=1)


@pytest.mark.parametrize(
    "text, words, line, field",
    [
        ('{"index": 0, "coef": 0.5}\n{"index": 1}\n', ["missing field"], 2, "coef"),
        ('{"index": 0, "coef": 0.5}\n{"index": 1, "coef": 0.3\n', ["invalid JSON"], 2, None),
        ('{"index": 0, "coef": "high"}\n', ["expected int or float, found str"], 1, "coef"),
        ('{"index": 99999, "coef": 0.5}\n', ["is not in the captions file"], 1, "index"),
    ],
)
def test_kept_captions_file_names_line_and_field(twins, tmp_path, text, words, line, field):
    root = copy_of(twins["ic"], tmp_path)
    kept = tmp_path / "kept_captions.jsonl"
    kept.write_text(text)
    raises(
        lambda: _captioned(root, mode="weighted", relevance_file=str(kept)),
        kept,
        *words,
        line=line,
        field=field,
    )


def test_imagenet_captions_latin1_json(tmp_path):
    path = tmp_path / "c.json"
    data = b'[{"filename": "n01443537_1.JPEG", "wnid": "n01443537", "title": "caf\xe9"}]'
    path.write_bytes(data)
    raises(
        lambda: read_imagenet_captions(path),
        path,
        "not valid UTF-8",
        f"byte offset {data.index(0xE9)}",
        line=1,
    )


def test_sun397_mapping_csv_not_utf8(tmp_path):
    path = tmp_path / "map.csv"
    path.write_bytes(b"class,hashtag\n/a/abbey,church\n/a/alley,str\xe9et\n")
    raises(lambda: read_hashtag_mapping(path), path, "not valid UTF-8", line=3)


# ---- 4. duplicate ids ----------------------------------------------------------------------------


def test_nuswide_repeated_image_line(twins, tmp_path, caplog):
    root = copy_of(twins["nuswide"], tmp_path)
    lines = (root / TRAIN_LIST).read_bytes().split(b"\r\n")
    tag_rows = (root / "NUS_WID_Tags/Train_Tags1k.dat").read_bytes().split(b"\r\n")
    k = next(i for i, row in enumerate(tag_rows) if b"1" in row)
    lines[k + 1] = lines[k]  # the next row repeats image k with its own tags and labels
    (root / TRAIN_LIST).write_bytes(b"\r\n".join(lines))
    with caplog.at_level(logging.INFO, logger="datamodules.nuswide"):
        index = read_nuswide(root)
    assert index.stats["duplicate_images"]["train"] == 1
    assert [r.image for r in index.records].count(lines[k].decode().replace("\\", "/")) == 1
    assert f"line {k + 2} repeats" in caplog.text or "identical to an earlier one" in caplog.text


def test_imagenet_captions_duplicate_filename(tmp_path, caplog):
    entry = {
        "filename": "n01443537_1.JPEG",
        "wnid": "n01443537",
        "title": "a goldfish",
        "description": "",
        "tags": [],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps([entry, dict(entry), {**entry, "title": "another caption"}]))
    with caplog.at_level(logging.INFO, logger="datamodules.imagenet_captions.reader"):
        captions = read_imagenet_captions(path)
    assert [c.index for c in captions] == [0]
    assert "dropped 1 repeated entry(s) identical" in caplog.text
    assert (
        "dropped 1 repeated entry(s) whose content differs" in caplog.text
        and "entry 2 repeats" in caplog.text
    )


def test_crisismmd_repeated_image_id_with_another_label(twins, tmp_path, caplog):
    root = copy_of(twins["crisismmd"], tmp_path)
    path = root / INFORMATIVE_TRAIN
    lines = path.read_text(encoding="utf-8").split("\n")
    fields = lines[1].split("\t")
    fields[5] = "not_informative" if fields[5] == "informative" else "informative"
    lines.insert(2, "\t".join(fields))
    path.write_text("\n".join(lines), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="datamodules.crisismmd"):
        stats = read_crisismmd(root).stats
    assert stats["duplicate_rows"] == 1
    assert str(path) in caplog.text and "line 3 repeats" in caplog.text and "line 2" in caplog.text


# ---- 5. SUN397 class -> hashtag mapping ----------------------------------------------------------


def test_sun397_class_missing_from_mapping_is_an_error(tmp_path, caplog):
    mapping = {"/a/abbey": "church", "/a/abbbey": "church", "/z/zoo": "other"}
    raises(
        lambda: class_targets(["/a/abbey", "/a/alley"], mapping, ["church", "other"], tmp_path / "map.csv"),
        tmp_path / "map.csv",
        "1 class(es) of the class list have no row",
        "/a/alley",
        "/a/abbbey",
        field="class",
    )
    with caplog.at_level(logging.INFO, logger="datamodules.sun397"):
        assert class_targets(["/a/abbey"], mapping, ["church", "other"], tmp_path / "map.csv") == [0]
    assert "2 row(s)" in caplog.text and "/z/zoo" in caplog.text


def test_sun397_mapping_repeated_class(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("class,hashtag\n/a/abbey,church\n/a/abbey,\n")
    raises(lambda: read_hashtag_mapping(path), path, "repeats line 2", line=3, field="class")


# ---- 6. ImageNet-Captions fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change, words, field",
    [
        ({"tags": ["ok", None, 7]}, ["entry 0: tag 1 is NoneType"], "tags"),
        ({"filename": "n09999999_1.JPEG"}, ["entry 0", "not an image of class n01443537"], "filename"),
    ],
)
def test_imagenet_captions_field_validation(tmp_path, change, words, field):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            [
                {
                    "filename": "n01443537_1.JPEG",
                    "wnid": "n01443537",
                    "title": "a goldfish",
                    "description": "",
                    "tags": [],
                    **change,
                }
            ]
        )
    )
    raises(lambda: read_imagenet_captions(path), path, *words, field=field)


def test_synset_mapping_not_utf8(tmp_path):
    path = tmp_path / "LOC_synset_mapping.txt"
    path.write_bytes(b"n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius aur\xe9tus\n")
    raises(lambda: read_synset_mapping(path), path, "not valid UTF-8", line=2)


# ---- 7. synthetic CrisisMMD dates ----------------------------------------------------------------


def test_crisismmd_twin_date_folders_are_real_dates(twins):
    folders = {p.parent.name for p in (twins["crisismmd"] / "CrisisMMD_v2.0").rglob("*.jpg")}
    assert folders
    for name in folders:
        datetime.datetime.strptime(name, "%d_%m_%Y")  # raises on 38_5_2017
