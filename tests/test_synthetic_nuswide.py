"""Tests of the synthetic NUS-WIDE twin writer (layout, formats, label and tag statistics)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.synthetic.nuswide import CONCEPTS, META_FILE, ensure_nuswide, main, write_nuswide
from datamodules.synthetic.world import ConceptRegistry, Glyph, Scene, build_vocabulary, render_scene

NUM_IMAGES = 400
SEED = 7
ANIMALS = ("bear", "birds", "cat", "cow", "dog", "elk", "fish", "fox", "horses", "tiger", "whales", "zebra")
IMAGE_PATH = re.compile(r"^[a-z]+\\\d{4}_\d{9,10}\.jpg$")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A small twin written once for the whole module, with its summary."""
    root = tmp_path_factory.mktemp("nuswide") / "twin"
    return root, write_nuswide(root, num_images=NUM_IMAGES, seed=SEED)


def crlf_lines(path: Path) -> list[bytes]:
    """Lines of a CRLF file (asserting it is CRLF-terminated)."""
    data = path.read_bytes()
    assert data.endswith(b"\r\n"), path
    return data[:-2].split(b"\r\n")


def zero_one_matrix(path: Path, sep: bytes) -> np.ndarray:
    """Parse a 0/1 matrix file whose values are each followed by ``sep``."""
    rows = [line.split(sep) for line in crlf_lines(path)]
    assert all(row[-1] == b"" for row in rows), f"{path}: values must be followed by {sep!r}"
    return np.array([[int(v) for v in row[:-1]] for row in rows], dtype=np.uint8)


def label_matrix(root: Path, suffix: str = "") -> np.ndarray:
    """Label columns of every concept from ``Groundtruth``, as an [n, 81] matrix."""
    folder = "TrainTestLabels" if suffix else "AllLabels"
    return np.stack(
        [
            [int(v) for v in crlf_lines(root / "Groundtruth" / folder / f"Labels_{c}{suffix}.txt")]
            for c in CONCEPTS
        ],
        axis=1,
    )


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = write_nuswide(tmp_path / "a", num_images=60, seed=1)
    second = write_nuswide(tmp_path / "b", num_images=60, seed=1)
    other = write_nuswide(tmp_path / "c", num_images=60, seed=2)
    assert first == second
    assert tree_hashes(tmp_path / "a") == tree_hashes(tmp_path / "b")
    assert tree_hashes(tmp_path / "a") != tree_hashes(tmp_path / "c")
    assert first != other


def test_layout_is_complete(twin: tuple[Path, dict]) -> None:
    root, _ = twin
    expected = [
        "ConceptsList/Concepts81.txt",
        "NUS_WID_Tags/TagList1k.txt",
        "NUS_WID_Tags/AllTags1k.txt",
        "ImageList/Imagelist.txt",
        META_FILE,
    ]
    for split in ("Train", "Test"):
        expected += [
            f"NUS_WID_Tags/{split}_Tags1k.dat",
            f"NUS_WID_Tags/{split}_Tags81.txt",
            f"ImageList/{split}Imagelist.txt",
        ]
        expected += [f"Groundtruth/TrainTestLabels/Labels_{c}_{split}.txt" for c in CONCEPTS]
    expected += [f"Groundtruth/AllLabels/Labels_{c}.txt" for c in CONCEPTS]
    assert [name for name in expected if not (root / name).is_file()] == []
    assert [line.decode() for line in crlf_lines(root / "ConceptsList/Concepts81.txt")] == list(CONCEPTS)
    assert list(CONCEPTS) == sorted(CONCEPTS) and len(CONCEPTS) == 81


def test_image_lists_and_files(twin: tuple[Path, dict]) -> None:
    root, summary = twin
    images = [line.decode() for line in crlf_lines(root / "ImageList/Imagelist.txt")]
    train = [line.decode() for line in crlf_lines(root / "ImageList/TrainImagelist.txt")]
    test = [line.decode() for line in crlf_lines(root / "ImageList/TestImagelist.txt")]
    assert len(images) == NUM_IMAGES
    assert (len(train), len(test)) == (summary["num_train"], summary["num_test"])
    assert all(IMAGE_PATH.match(p) for p in images), images[:3]
    assert len({p.split("_")[1] for p in images}) == NUM_IMAGES, "Flickr ids must be unique"
    assert sorted(train + test) == sorted(images)
    assert [p for p in images if p in set(train)] == train, "train list keeps Imagelist order"
    assert [p for p in images if p in set(test)] == test, "test list keeps Imagelist order"
    on_disk = sorted(p.relative_to(root / "Flickr").as_posix() for p in (root / "Flickr").rglob("*.jpg"))
    assert on_disk == sorted(p.replace("\\", "/") for p in images)
    with Image.open(root / "Flickr" / images[0].replace("\\", "/")) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))


def test_text_files_are_crlf_with_release_separators(twin: tuple[Path, dict]) -> None:
    root, _ = twin
    for path in root.rglob("*"):
        if path.suffix in (".txt", ".dat"):
            data = path.read_bytes()
            assert data.endswith(b"\r\n") and data.count(b"\n") == data.count(b"\r\n"), path
    assert crlf_lines(root / "NUS_WID_Tags/Train_Tags1k.dat")[0].endswith(b"\t")
    assert crlf_lines(root / "NUS_WID_Tags/Train_Tags81.txt")[0].endswith(b" ")
    assert crlf_lines(root / "Groundtruth/AllLabels/Labels_sky.txt")[0] in (b"0", b"1")


def test_rows_are_aligned(twin: tuple[Path, dict]) -> None:
    root, summary = twin
    all_labels = label_matrix(root)
    all_tags = zero_one_matrix(root / "NUS_WID_Tags/AllTags1k.txt", b"\t")
    assert all_labels.shape == (NUM_IMAGES, 81) and all_tags.shape == (NUM_IMAGES, 1000)
    images = crlf_lines(root / "ImageList/Imagelist.txt")
    for split in ("Train", "Test"):
        members = set(crlf_lines(root / f"ImageList/{split}Imagelist.txt"))
        mask = np.array([p in members for p in images])
        assert (label_matrix(root, f"_{split}") == all_labels[mask]).all()
        assert (zero_one_matrix(root / f"NUS_WID_Tags/{split}_Tags81.txt", b" ") == all_labels[mask]).all()
        assert (zero_one_matrix(root / f"NUS_WID_Tags/{split}_Tags1k.dat", b"\t") == all_tags[mask]).all()
    assert summary["concept_counts"] == dict(zip(CONCEPTS, all_labels.sum(axis=0).tolist()))


def test_label_counts_vary_and_frequencies_are_skewed(twin: tuple[Path, dict]) -> None:
    root, summary = twin
    labels = label_matrix(root)
    per_image = labels.sum(axis=1)
    assert per_image.min() >= 1 and per_image.max() <= 6
    assert len(np.unique(per_image)) >= 4
    assert 1.9 <= per_image.mean() <= 3.0
    assert summary["labels_per_image"]["mean"] == pytest.approx(per_image.mean(), abs=1e-3)
    freq = np.sort(labels.mean(axis=0))[::-1]
    assert freq[0] >= 0.2, "a few concepts are very frequent"
    assert (freq <= 0.015).sum() >= 20, "many concepts are rare"
    assert freq[:10].sum() > 3 * freq[-40:].sum()


def test_parent_concepts_follow_children(twin: tuple[Path, dict]) -> None:
    labels = label_matrix(twin[0])
    column = {c: labels[:, j].astype(bool) for j, c in enumerate(CONCEPTS)}
    has_animal = np.any([column[a] for a in ANIMALS], axis=0)
    has_water_child = np.any([column[c] for c in ("lake", "ocean", "waterfall")], axis=0)
    assert has_animal.any() and (column["animal"] >= has_animal).all()
    assert has_water_child.any() and (column["water"] >= has_water_child).all()
    assert (column["sky"] >= column["clouds"]).all() and column["clouds"].any()


def test_tags_are_noisy_but_informative(twin: tuple[Path, dict]) -> None:
    root, summary = twin
    labels = label_matrix(root).astype(bool)
    tags = zero_one_matrix(root / "NUS_WID_Tags/AllTags1k.txt", b"\t").astype(bool)
    taglist = [line.decode() for line in crlf_lines(root / "NUS_WID_Tags/TagList1k.txt")]
    assert len(taglist) == len(set(taglist)) == 1000
    assert (np.diff(tags.sum(axis=0)) <= 0).all(), "TagList1k is in frequency order"
    tagged = tags.any(axis=1)
    name_tags = tags[:, [taglist.index(c) for c in CONCEPTS]][tagged]
    truth = labels[tagged]
    hits = (name_tags & truth).sum(axis=0)
    recall = hits.sum() / truth.sum()
    precision = hits.sum() / name_tags.sum()
    assert 0.3 <= recall <= 0.75, "concept name tags are often missing"
    assert 0.85 <= precision < 1.0, "concept name tags are mostly right, sometimes wrong"
    rare = truth.sum(axis=0) <= 0.02 * len(truth)
    rare_precision = hits[rare].sum() / name_tags[:, rare].sum()
    assert rare_precision >= 0.85, "tags are informative for rare concepts"
    assert (tags.sum(axis=1)[tagged] > name_tags.sum(axis=1)).all(), "every tagged image has filler tags"


def test_untagged_images_are_recorded(twin: tuple[Path, dict]) -> None:
    root, summary = twin
    untagged = ~zero_one_matrix(root / "NUS_WID_Tags/AllTags1k.txt", b"\t").any(axis=1)
    assert 0 < untagged.sum() == summary["untagged"]["total"] < 0.1 * NUM_IMAGES
    assert summary["untagged"]["train"] + summary["untagged"]["test"] == untagged.sum()
    meta = json.loads((root / META_FILE).read_text())
    assert meta["params"]["seed"] == SEED and meta["summary"] == summary
    assert meta["noise"]["concept_tag_prob"] == 0.6 and meta["noise"]["wrong_concept_prob"] == 0.05
    assert meta["noise"]["untagged_fraction"] == 0.03


def test_ensure_reuses_matching_twin_and_replaces_stale_one(tmp_path: Path) -> None:
    root = tmp_path / "twin"
    assert ensure_nuswide(root, num_images=30, seed=1) == root
    stamp = (root / META_FILE).stat().st_mtime_ns
    ensure_nuswide(root, num_images=30, seed=1)
    assert (root / META_FILE).stat().st_mtime_ns == stamp, "a matching twin is not rewritten"
    ensure_nuswide(root, num_images=40, seed=1)
    assert len(crlf_lines(root / "ImageList/Imagelist.txt")) == 40
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".twin.lock") == ["twin"]


def test_ensure_never_touches_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        ensure_nuswide(tmp_path / "real", num_images=10)
    with pytest.raises(FileExistsError):
        write_nuswide(tmp_path / "real", num_images=10)
    assert (tmp_path / "real" / "precious.txt").read_text() == "keep me"


def test_ensure_is_safe_for_concurrent_callers(tmp_path: Path) -> None:
    root = tmp_path / "twin"
    errors: list[BaseException] = []

    def call() -> None:
        try:
            ensure_nuswide(root, num_images=30, seed=4)
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads((root / META_FILE).read_text())["params"]["num_images"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == [".twin.lock", "twin"]


def test_cli_writes_twin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--root", str(tmp_path / "cli"), "--num-images", "20", "--seed", "3", "--image-size", "32"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_images"] == 20
    assert json.loads((tmp_path / "cli" / META_FILE).read_text())["params"]["image_size"] == 32


def test_registry_gives_distinct_signatures() -> None:
    scene_concepts = {"sky": "sky", "water": "water"}
    registry = ConceptRegistry.build(CONCEPTS, scene_concepts)
    glyphs = list(registry.glyphs.values())
    assert len(glyphs) == len(set(glyphs)) == 79 and not set(glyphs) & set(registry.spare)
    scene = registry.scene(["sky", "cat"], np.random.default_rng(0), distractor_prob=0.0)
    assert scene == Scene(frozenset({"sky"}), (registry.glyphs["cat"],))


def test_render_is_deterministic() -> None:
    glyphs = (Glyph("star", "red"), Glyph("ring", "blue"))
    scene = Scene(frozenset({"sky", "clouds", "water", "night"}), glyphs)
    first = render_scene(scene, 64, np.random.default_rng(5))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert (first == render_scene(scene, 64, np.random.default_rng(5))).all()
    with pytest.raises(ValueError):
        Scene(frozenset({"water", "grass", "sand"}))


def test_vocabulary_has_exact_size_and_reserved_words_first() -> None:
    vocab = build_vocabulary(["cat", "kitten"], 1000)
    assert len(vocab) == len(set(vocab)) == 1000 and vocab[:2] == ["cat", "kitten"]
    assert all(re.fullmatch(r"[a-z0-9]+", w) for w in vocab)
