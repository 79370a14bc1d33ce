"""Tests of the NUS-WIDE reader and compact index, on the synthetic twin and the real list files."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from datamodules.errors import DatasetFormatError
from datamodules.nuswide import (
    CONCEPTS_FILE,
    INDEX_FILENAME,
    INDEX_VERSION,
    TAGLIST_FILE,
    build_index,
    load_index,
    multi_hot,
    read_concepts,
    read_index_header,
    read_nuswide,
    read_tag_list,
)
from datamodules.synthetic.nuswide import CONCEPTS, write_nuswide
from experiments.prepare_nuswide import main as prepare_main

REAL_FORMATS = Path(__file__).resolve().parent.parent.parent / "shared" / "real-formats" / "nus-wide"
TRAIN_LIST = Path("ImageList/TrainImagelist.txt")
TRAIN_DAT = Path("NUS_WID_Tags/Train_Tags1k.dat")
SKY_TRAIN = Path("Groundtruth/TrainTestLabels/Labels_sky_Train.txt")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A twin written once per module (never modified) and its summary."""
    root = tmp_path_factory.mktemp("nuswide") / "twin"
    return root, write_nuswide(root, num_images=200, seed=7)


@pytest.fixture
def twin(pristine: tuple[Path, dict], tmp_path: Path) -> Path:
    """A private copy of the twin that a test may corrupt."""
    return Path(shutil.copytree(pristine[0], tmp_path / "twin"))


def lines_of(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\r\n")[:-1]


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode())


def replace_line(path: Path, number: int, text: str) -> None:
    """Replace 1-based line ``number`` of a CRLF file."""
    lines = lines_of(path)
    lines[number - 1] = text
    write_lines(path, lines)


def expect_error(root: Path, file: Path, line: int | None, *words: str) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        read_nuswide(root)
    err = info.value
    assert err.path == root / file and err.line == line, str(err)
    message = str(err)
    assert str(root / file) in message and all(w in message for w in words), message
    return err


# ---- reading the twin ------------------------------------------------------------------------


def test_counts_match_the_writer(pristine: tuple[Path, dict]) -> None:
    root, summary = pristine
    index = read_nuswide(root)
    stats = index.stats
    assert stats["listed"] == {
        "train": summary["num_train"],
        "test": summary["num_test"],
        "total": summary["num_images"],
    }
    assert stats["dropped_untagged"] == summary["untagged"]
    assert summary["untagged"]["train"] > 0 and summary["untagged"]["test"] > 0
    assert stats["missing_images"]["total"] == 0
    kept = summary["num_images"] - summary["untagged"]["total"]
    assert stats["kept"]["total"] == len(index.records) == kept
    assert index.concepts == list(CONCEPTS) and len(index.tags) == 1000
    assert Path(index.image_root) == (root / "Flickr").resolve()
    assert all("\\" not in r.image and (root / "Flickr" / r.image).is_file() for r in index.records)
    assert all(r.tags for r in index.records)


def test_records_match_the_release_rows(pristine: tuple[Path, dict]) -> None:
    root, _ = pristine
    index = read_nuswide(root)
    images = [p.replace("\\", "/") for p in lines_of(root / TRAIN_LIST)]
    rows = {img: row for img, row in zip(images, lines_of(root / "NUS_WID_Tags/Train_Tags81.txt"))}
    labels, tags = index.arrays("train")
    train = index.split("train")
    assert labels.shape == (len(train), 81) and tags.shape == (len(train), 1000)
    for record, label_row in zip(train, labels):
        assert label_row.tolist() == [int(v) for v in rows[record.image].split()]
    assert (tags.sum(axis=1) == [len(r.tags) for r in train]).all()


def test_missing_image_is_dropped_and_reported(twin: Path, caplog: pytest.LogCaptureFixture) -> None:
    victim = read_nuswide(twin).records[3]
    (twin / "Flickr" / victim.image).unlink()
    with caplog.at_level(logging.WARNING, logger="datamodules.nuswide"):
        index = read_nuswide(twin)
    assert index.stats["missing_images"]["total"] == 1
    assert index.stats["missing_images"][victim.split] == 1
    assert victim.image not in {r.image for r in index.records}
    assert "1 listed images missing" in caplog.text and victim.image in caplog.text
    unchecked = read_nuswide(twin, check_images=False)
    assert unchecked.stats["missing_images"]["total"] == 0
    assert victim.image in {r.image for r in unchecked.records}


def test_images_without_labels_are_kept(twin: Path) -> None:
    images = lines_of(twin / TRAIN_LIST)
    row = next(k for k, line in enumerate(lines_of(twin / TRAIN_DAT)) if "1" in line)  # tagged
    for concept in CONCEPTS:
        replace_line(twin / "Groundtruth/TrainTestLabels" / f"Labels_{concept}_Train.txt", row + 1, "0")
    index = read_nuswide(twin, drop_unlabeled=False)  # the old behaviour, now an option
    record = next(r for r in index.records if r.image == images[row].replace("\\", "/"))
    assert record.labels == [] and index.stats["unlabeled_kept"]["train"] == 1


def test_tolerates_lf_bom_trailing_blanks_and_missing_final_newline(
    twin: Path, pristine: tuple[Path, dict]
) -> None:
    expected = read_nuswide(pristine[0])
    concepts = twin / CONCEPTS_FILE
    concepts.write_bytes(b"\xef\xbb\xbf" + concepts.read_bytes().replace(b"\r\n", b" \t\n").rstrip(b"\n"))
    dat = twin / TRAIN_DAT
    dat.write_bytes(dat.read_bytes().replace(b"\r\n", b"\n"))
    sky = twin / SKY_TRAIN
    sky.write_bytes(sky.read_bytes().replace(b"\r\n", b" \n") + b"\n\n")
    assert read_nuswide(twin).records == expected.records


# ---- malformed releases ------------------------------------------------------------------------


def test_corrupt_label_line(twin: Path) -> None:
    replace_line(twin / SKY_TRAIN, 5, "x")
    expect_error(twin, SKY_TRAIN, 5, "expected 0 or 1", "'x'")


def test_dat_row_with_999_columns(twin: Path) -> None:
    replace_line(twin / TRAIN_DAT, 7, "0\t" * 999)
    expect_error(twin, TRAIN_DAT, 7, "expected 1000 columns, found 999")


def test_dat_value_not_zero_or_one(twin: Path) -> None:
    values = lines_of(twin / TRAIN_DAT)[2].split("\t")
    values[41] = "2"
    replace_line(twin / TRAIN_DAT, 3, "\t".join(values))
    err = expect_error(twin, TRAIN_DAT, 3, "expected 0 or 1", "'2'", "column 42")
    assert err.field == "column 42"


def test_missing_label_file(twin: Path) -> None:
    missing = Path("Groundtruth/TrainTestLabels/Labels_zebra_Test.txt")
    (twin / missing).unlink()
    expect_error(twin, missing, None, "missing file", "0/1 label per line", "TestImagelist.txt")


def test_truncated_image_list(twin: Path) -> None:
    images = lines_of(twin / TRAIN_LIST)
    write_lines(twin / TRAIN_LIST, images[:-1])
    first_label_file = Path("Groundtruth/TrainTestLabels/Labels_airport_Train.txt")
    expect_error(
        twin,
        first_label_file,
        len(images),
        f"has {len(images)} rows",
        str(twin / TRAIN_LIST),
        f"lists {len(images) - 1} images",
    )


def test_wrong_number_and_duplicate_concepts(twin: Path) -> None:
    names = lines_of(twin / CONCEPTS_FILE)
    write_lines(twin / CONCEPTS_FILE, names[:-1])
    expect_error(twin, CONCEPTS_FILE, None, "expected 81 names, found 80")
    write_lines(twin / CONCEPTS_FILE, [*names[:10], names[3], *names[11:]])
    expect_error(twin, CONCEPTS_FILE, 11, f"duplicate name {names[3]!r}", "first on line 4")


def test_wrong_number_of_tags(twin: Path) -> None:
    write_lines(twin / TAGLIST_FILE, [*lines_of(twin / TAGLIST_FILE), "extratag"])
    expect_error(twin, TAGLIST_FILE, None, "expected 1000 names, found 1001")


def test_missing_image_folder(twin: Path) -> None:
    shutil.rmtree(twin / "Flickr")
    expect_error(twin, Path("Flickr"), None, "missing image folder")
    assert read_nuswide(twin, check_images=False).stats["missing_images"]["total"] == 0


# ---- compact index -----------------------------------------------------------------------------


def test_index_round_trip(pristine: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = pristine
    path = build_index(root, tmp_path / "out" / INDEX_FILENAME)
    header, _ = read_index_header(path)
    assert header["format"] == "nuswide-index" and header["version"] == INDEX_VERSION
    loaded, direct = load_index(path), read_nuswide(root)
    assert loaded == direct
    assert [p.name for p in path.parent.iterdir()] == [INDEX_FILENAME], "no temporary file left"


def test_corrupt_index_files(pristine: tuple[Path, dict], tmp_path: Path) -> None:
    path = build_index(pristine[0], tmp_path / INDEX_FILENAME)
    original = path.read_bytes()
    head, _, body = original.partition(b"\n")
    header = json.loads(head)

    def load_with(data: bytes, *words: str, line: int | None = 1, field: str | None = None) -> None:
        path.write_bytes(data)
        with pytest.raises(DatasetFormatError) as info:
            load_index(path)
        err = info.value
        assert err.path == path and err.line == line and err.field == field, str(err)
        assert all(w in str(err) for w in words), str(err)

    def with_header(**changes) -> bytes:  # padded to the original length: the arrays stay in place
        text = json.dumps({**header, **changes}, separators=(",", ":")).encode()
        return text.ljust(len(head)) + b"\n" + body

    load_with(head[:-7] + b"\n" + body, "invalid JSON")
    load_with(b"", "empty index file")
    load_with(with_header(format="other"), "not a nuswide-index", field="format")
    load_with(with_header(version=1), f"version {INDEX_VERSION}", field="format")
    del header["tags"]
    load_with(with_header(), "missing field", field="tags")
    header = json.loads(head)
    arrays = json.loads(json.dumps(header["arrays"]))
    arrays["tag_bits"]["shape"][1] = 12
    load_with(with_header(arrays=arrays), "expected", field="arrays.tag_bits")
    stats = {**header["stats"], "kept": {**header["stats"]["kept"], "total": 3}}
    load_with(with_header(stats=stats), "truncated", line=None)
    load_with(original[:-100], "truncated", line=None)
    path.write_bytes(original)
    assert load_index(path) == read_nuswide(pristine[0])


def test_multi_hot() -> None:
    dense = multi_hot([[0, 2], [], [1]], 4)
    assert dense.dtype == np.uint8
    assert dense.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert multi_hot([], 3).shape == (0, 3)


def test_prepare_cli(pristine: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, summary = pristine
    assert prepare_main(["--root", str(root), "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["stats"]["listed"]["total"] == summary["num_images"]
    assert len(load_index(tmp_path / "out" / INDEX_FILENAME).records) == printed["stats"]["kept"]["total"]
    assert prepare_main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "Concepts81.txt" in capsys.readouterr().err


# ---- the publisher's real list files ---------------------------------------------------------


def real_file(relative: Path) -> Path:
    if not REAL_FORMATS.is_dir():
        pytest.skip(f"real NUS-WIDE format excerpts not found at {REAL_FORMATS}")
    return REAL_FORMATS / relative


def test_real_concepts_list() -> None:
    concepts = read_concepts(real_file(CONCEPTS_FILE))
    assert len(concepts) == 81 and concepts == sorted(concepts)
    assert concepts[0] == "airport" and concepts[-1] == "zebra"
    assert concepts == list(CONCEPTS), "the twin uses the real concept names and order"
    assert not any("\r" in c or c != c.strip() for c in concepts)


def test_real_tag_list() -> None:
    tags = read_tag_list(real_file(TAGLIST_FILE))
    assert len(tags) == len(set(tags)) == 1000
    assert not any("\r" in t or t != t.strip() or not t for t in tags)
