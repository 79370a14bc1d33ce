"""The NUS-WIDE index: image checks at build time, rebuilding a stale index, validation membership
by image id, the seed's label filter, the bit-packed parser's fast and slow paths, and the scale twin."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import datamodules.nuswide as nuswide
from datamodules.errors import DatasetFormatError
from datamodules.nuswide import (
    INDEX_FILENAME,
    NusWideDataModule,
    build_index,
    check_image_files,
    load_index,
    read_nuswide,
    validation_mask,
)
from datamodules.synthetic.nuswide import CONCEPTS, META_FILE, write_nuswide, write_scale_twin

TRAIN_LIST = Path("ImageList/TrainImagelist.txt")
TRAIN_DAT = Path("NUS_WID_Tags/Train_Tags1k.dat")
LABELS = Path("Groundtruth/TrainTestLabels")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nuswide") / "twin"
    write_nuswide(root, num_images=240, image_size=16, seed=11)
    return root


@pytest.fixture
def twin(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the twin that a test may change."""
    return Path(shutil.copytree(pristine, tmp_path / "twin"))


def crlf_lines(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\r\n")[:-1]


def replace_line(path: Path, number: int, text: str) -> None:
    lines = crlf_lines(path)
    lines[number - 1] = text
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode())


def touch_later(path: Path) -> None:
    """Move a file's modification time a second forward (an edit within one clock tick looks unchanged)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def set_up(root: Path, **kwargs) -> NusWideDataModule:
    datamodule = NusWideDataModule(str(root), batch_size=8, **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def images_of(dataset) -> set[str]:
    return {dataset.index.image(int(row)) for row in dataset.rows}


# ---- image checks ---------------------------------------------------------------------------------


def test_unreadable_images_are_dropped_and_counted(twin: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = read_nuswide(twin)
    cut, not_jpeg = index.image(4), index.image(len(index) - 2)
    data = (twin / "Flickr" / cut).read_bytes()
    (twin / "Flickr" / cut).write_bytes(data[: len(data) // 2])  # an interrupted download
    (twin / "Flickr" / not_jpeg).write_text("<html>photo unavailable</html>")
    with caplog.at_level(logging.WARNING, logger="datamodules.nuswide"):
        checked = read_nuswide(twin)
    assert checked.stats["unreadable_images"]["total"] == 2 and checked.stats["missing_images"]["total"] == 0
    assert {cut, not_jpeg}.isdisjoint(r.image for r in checked.records)
    assert len(checked) == len(index) - 2
    assert "2 unreadable images" in caplog.text and cut in caplog.text


def test_parallel_image_checks_agree_with_serial(twin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = sorted(str(p) for p in (twin / "Flickr").rglob("*.jpg"))[:40]
    Path(images[3]).write_bytes(Path(images[3]).read_bytes()[:100])
    Path(images[7]).unlink()
    expected = np.zeros(len(images), dtype=np.int8)
    expected[3], expected[7] = 2, 1
    monkeypatch.setattr(nuswide, "_PARALLEL_CHECK_MIN", 1)
    assert check_image_files(images, workers=1).tolist() == expected.tolist()
    assert check_image_files(images, workers=2).tolist() == expected.tolist()


# ---- the seed's filters -----------------------------------------------------------------------------


def test_images_without_labels_are_dropped_by_default(twin: Path) -> None:
    tagged = [k for k, line in enumerate(crlf_lines(twin / TRAIN_DAT)) if "1" in line]
    cleared = tagged[:2]
    for concept in CONCEPTS:
        for row in cleared:
            replace_line(twin / LABELS / f"Labels_{concept}_Train.txt", row + 1, "0")
    images = [crlf_lines(twin / TRAIN_LIST)[row].replace("\\", "/") for row in cleared]
    index = read_nuswide(twin)
    assert index.stats["dropped_unlabeled"] == {"train": 2, "test": 0, "total": 2}
    assert index.stats["unlabeled_kept"]["total"] == 0 and set(images).isdisjoint(
        r.image for r in index.records
    )
    assert all(r.labels for r in index.records)
    kept = read_nuswide(twin, drop_unlabeled=False)
    assert len(kept) == len(index) + 2 and kept.stats["dropped_unlabeled"]["total"] == 0


# ---- validation membership -----------------------------------------------------------------------


def test_validation_membership_depends_only_on_the_image(twin: Path, tmp_path: Path) -> None:
    before = set_up(twin)
    val, train = images_of(before.data_val), images_of(before.data_train)
    assert 5 <= len(val) <= 30 and not val & train
    for victim in (sorted(train)[3], sorted(val)[1]):  # one image of each part
        (twin / "Flickr" / victim).unlink()
        after = set_up(twin, index_path=str(tmp_path / f"{len(val)}_{victim.replace('/', '_')}.bin"))
        assert images_of(after.data_val) == val - {victim}
        assert images_of(after.data_train) == train - {victim}
        val, train = val - {victim}, train - {victim}


def test_validation_share_and_seed() -> None:
    hashes = nuswide.path_hashes([f"q/{i:04d}_{i * 7919}.jpg" for i in range(20_000)])
    share = validation_mask(hashes, 0.1, seed=0).mean()
    assert abs(share - 0.1) < 4 * np.sqrt(0.1 * 0.9 / 20_000)
    other = validation_mask(hashes, 0.1, seed=1)
    assert (other != validation_mask(hashes, 0.1, seed=0)).mean() > 0.1
    assert validation_mask(hashes[:500], 0.1, seed=1).tolist() == other[:500].tolist()


# ---- stale indexes --------------------------------------------------------------------------------


def test_edited_label_file_rebuilds_the_index(twin: Path) -> None:
    first = set_up(twin)
    record = first.index.record(int(first.index.rows("train")[0]))
    sky = CONCEPTS.index("sky")
    row = [line.replace("\\", "/") for line in crlf_lines(twin / TRAIN_LIST)].index(record.image) + 1
    label_file = twin / LABELS / "Labels_sky_Train.txt"
    replace_line(label_file, row, "0" if sky in record.labels else "1")
    touch_later(label_file)
    second = NusWideDataModule(str(twin))
    assert "Labels_sky_Train.txt" in second.stale_reason()
    second.prepare_data()
    second.setup("fit")
    changed = second.index.record(int(second.index.rows("train")[0]))
    assert changed.image == record.image and (sky in changed.labels) != (sky in record.labels)
    assert second.stale_reason() is None

    replace_line(label_file, 3, "2")  # an out-of-range label: refused, naming the file and line
    touch_later(label_file)
    with pytest.raises(DatasetFormatError) as info:
        NusWideDataModule(str(twin)).prepare_data()
    assert info.value.path == label_file and info.value.line == 3 and "'2'" in str(info.value)


def test_removed_image_and_changed_setting_make_the_index_stale(twin: Path) -> None:
    first = set_up(twin)
    assert first.stale_reason() is None
    victim = first.index.image(0)
    (twin / "Flickr" / victim).unlink()
    touch_later(twin / "Flickr" / victim.split("/")[0])
    assert f"<images>/{victim.split('/')[0]}/" in NusWideDataModule(str(twin)).stale_reason()
    with pytest.raises(DatasetFormatError, match="run prepare_data"):
        NusWideDataModule(str(twin)).setup("fit")  # setup never builds
    rebuilt = set_up(twin)
    assert victim not in images_of(rebuilt.data_train) | images_of(rebuilt.data_val)
    assert rebuilt.index.stats["missing_images"]["total"] == 1
    assert "built with" in NusWideDataModule(str(twin), drop_unlabeled=False).stale_reason()


def test_a_foreign_file_at_the_index_path_is_never_overwritten(twin: Path) -> None:
    foreign = twin / "mine.bin"
    foreign.write_text(json.dumps({"format": "something-else"}) + "\n")
    with pytest.raises(DatasetFormatError, match="not a nuswide-index file"):
        NusWideDataModule(str(twin), index_path=str(foreign)).prepare_data()
    assert json.loads(foreign.read_text()) == {"format": "something-else"}


# ---- the parser's two paths --------------------------------------------------------------------------


def test_irregular_blanks_parse_like_the_usual_layout(twin: Path, pristine: Path) -> None:
    expected = read_nuswide(pristine)
    dat = twin / TRAIN_DAT
    rows = crlf_lines(dat)
    rows[5] = " " + "  ".join(rows[5].split("\t"))  # another layout in one row: the slow path
    rows[9] = rows[9].replace("\t", " ")
    dat.write_bytes("".join(f"{row}\r\n" for row in rows).encode())
    assert read_nuswide(twin).records == expected.records


def test_mapped_index_pickles_as_its_file_name(pristine: Path, tmp_path: Path) -> None:
    index = load_index(build_index(pristine, tmp_path / INDEX_FILENAME))
    data = pickle.dumps(index)
    assert len(data) < 1000  # not the arrays: a spawned loader worker maps the file again
    assert pickle.loads(data) == index


# ---- the scale twin --------------------------------------------------------------------------------


def test_scale_twin_is_read_by_the_real_config(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    import experiments.common  # noqa: F401  (PROJECT_ROOT, resolvers)
    from experiments.common import build

    root = tmp_path / "scale"
    info = write_scale_twin(root, fraction=0.004, seed=1)
    assert info["items"] == round(161_789 * 0.004) + round(107_859 * 0.004)
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"experiment={info['experiment']}", *info["overrides"]])
    assert cfg.data._target_ == "datamodules.nuswide.NusWideDataModule" and cfg.data.synthetic is None
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stats = datamodule.index.stats
    summary = json.loads((root / META_FILE).read_text())["summary"]
    assert stats["listed"]["total"] == info["items"] == summary["num_images"]
    assert stats["listed"]["train"] == round(161_789 * 0.004)
    for reason in ("dropped_untagged", "dropped_unlabeled", "missing_images"):
        assert stats[reason]["total"] > 0, reason
    assert 0.7 < stats["kept"]["total"] / info["items"] < 0.82  # the seed keeps ~75 % (Table 4.1)
    assert stats["unreadable_images"]["total"] <= summary["unreadable"]
    files = list((root / "Flickr").rglob("*.jpg"))
    assert len(files) == info["items"] - summary["missing"]
    assert len({f.stat().st_ino for f in files}) <= 16 and all(f.stat().st_nlink > 1 for f in files)
    with pytest.raises(FileExistsError):
        write_scale_twin(root, fraction=0.004)
