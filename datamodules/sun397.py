"""SUN397 reader and the hashtag DataModule (seed 002).

Reads a SUN397 release (the real one or the synthetic twin of :mod:`datamodules.synthetic.sun397`)
laid out as published::

    SUN397/<letter>/<class>[/<subclass>]/sun_<16 letters>.jpg     images (SUN397.tar.gz)
    Partitions/ClassName.txt                                      397 lines "/a/abbey", "/a/apartment_building/outdoor"
    Partitions/Training_NN.txt, Partitions/Testing_NN.txt         NN = 01..10; "/a/abbey/sun_....jpg" per line

Two split modes: ``partition`` (the official partition ``N``: its training and testing lists) and
``random`` (the seed's: every image on disk, a seeded 80/20 train/test split). In both, a seeded
validation part is carved from the training part. Every format problem raises
:class:`~datamodules.errors.DatasetFormatError` with the file and the line. A class-list entry
without images, partition entries missing on disk and unreadable images are dropped, counted in
``stats`` and logged, never silently; a split left empty is an error. The image check at setup is
cheap (:func:`~datamodules.base.image_is_readable`: headers and a JPEG's end marker); damage inside
a complete file is reported when the image is decoded, naming the file.

Labels are hashtags: each scene class maps to a hashtag or ``other`` through the mapping CSV of
``python -m experiments.map_hashtags`` (``conf/hashtags/sun397_hashtags.csv``); the model predicts
hashtags directly and the mapping stays here.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule, image_is_readable
from datamodules.errors import DatasetFormatError, read_text, require_rows
from datamodules.preprocessing.images import ImageTransforms

log = logging.getLogger(__name__)

OTHER = "other"
NUM_PARTITIONS = 10
CLASS_RE = re.compile(r"^/([a-z])/([a-z0-9_]+)(/[a-z0-9_]+)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
_MAX_EXAMPLES = 5


def _lines(path: Path) -> list[str]:
    """Lines of an ASCII text file (LF or CRLF, final newline optional); a missing file is an error."""
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetFormatError(path, f"non-ASCII byte {raw[err.start]:#x}", line=line) from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_class_names(path: Path) -> list[str]:
    """Class paths of ``ClassName.txt`` in file order (``/a/abbey``, ``/a/apartment_building/outdoor``)."""
    path = Path(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(_lines(path), 1):
        name = line.strip()
        match = CLASS_RE.match(name)
        if not match:
            raise DatasetFormatError(
                path, f"expected a class path like /a/abbey or /a/atrium/public, got {line!r}", line=i
            )
        if match.group(2)[0] != match.group(1):
            raise DatasetFormatError(path, f"class {name!r} is filed under the wrong letter", line=i)
        if name in seen:
            raise DatasetFormatError(path, f"class {name!r} repeats line {seen[name]}", line=i)
        seen[name] = i
        names.append(name)
    if not names:
        raise DatasetFormatError(path, "no classes")
    return names


def read_partition(path: Path, classes: dict[str, int]) -> list[tuple[str, int]]:
    """``(image path relative to the image root, class index)`` of a ``Training_NN``/``Testing_NN`` file."""
    path = Path(path)
    out: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(_lines(path), 1):
        entry = line.strip()
        class_path, _, filename = entry.rpartition("/")
        if not entry.startswith("/") or not filename.lower().endswith(IMAGE_SUFFIXES):
            raise DatasetFormatError(path, f"expected /<class path>/<name>.jpg, got {line!r}", line=i)
        if class_path not in classes:
            raise DatasetFormatError(path, f"class {class_path!r} is not in the class list", line=i)
        if entry in seen:
            raise DatasetFormatError(path, f"{entry} repeats line {seen[entry]}", line=i)
        seen[entry] = i
        out.append((entry.lstrip("/"), classes[class_path]))
    return out


@dataclass
class Sun397Index:
    """Usable images of a release: ``records`` per split name, class list, and the drop counts."""

    classes: list[str]
    image_root: Path
    records: dict[str, list[tuple[str, int]]]
    stats: dict[str, Any] = field(default_factory=dict)


def scan_images(image_root: Path, classes: Sequence[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """Every image on disk, by class (files directly in the class folder), and classes with none."""
    records, empty = [], []
    for c, name in enumerate(classes):
        folder = image_root / name.lstrip("/")
        files = (
            sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if folder.is_dir()
            else []
        )
        if not files:
            empty.append(name)
        records += [(f"{name.lstrip('/')}/{p.name}", c) for p in files]
    return records, empty


def read_sun397(
    root: str | Path,
    *,
    split: str = "partition",
    partition: int = 1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    image_dir: str = "SUN397",
    class_list: str = "Partitions/ClassName.txt",
    partitions_dir: str = "Partitions",
    check_images: bool = True,
) -> Sun397Index:
    """Read a release into train/test records (see module doc). ``check_images`` opens every image
    once and drops (and counts) the unreadable ones."""
    root = Path(root)
    image_root = root / image_dir
    if not image_root.is_dir():
        raise DatasetFormatError(image_root, "image folder not found (expected SUN397/<letter>/<class>/...)")
    classes = read_class_names(root / class_list)
    index = {c: i for i, c in enumerate(classes)}
    on_disk, empty = scan_images(image_root, classes)
    stats: dict[str, Any] = {
        "classes": len(classes),
        "classes_without_images": len(empty),
        "images_on_disk": len(on_disk),
    }
    if empty:
        log.warning(
            "SUN397: %d class(es) of %s have no images: %s",
            len(empty),
            root / class_list,
            ", ".join(empty[:_MAX_EXAMPLES]),
        )
    sources = {"train": image_root, "test": image_root}  # random split: the images on disk
    if split == "partition":
        if not 1 <= partition <= NUM_PARTITIONS:
            raise ValueError(f"partition must be in 1..{NUM_PARTITIONS}, got {partition}")
        present = {p for p, _ in on_disk}
        records = {}
        for name, word in (("train", "Training"), ("test", "Testing")):
            sources[name] = root / partitions_dir / f"{word}_{partition:02d}.txt"
            listed = read_partition(sources[name], index)
            kept = [r for r in listed if r[0] in present]
            stats[f"missing_{name}"] = len(listed) - len(kept)
            if len(kept) < len(listed):
                log.warning(
                    "SUN397: %d image(s) of %s_%02d.txt are not on disk (dropped)",
                    len(listed) - len(kept),
                    word,
                    partition,
                )
            records[name] = kept
        overlap = {p for p, _ in records["train"]} & {p for p, _ in records["test"]}
        if overlap:
            raise DatasetFormatError(
                root / partitions_dir / f"Testing_{partition:02d}.txt",
                f"{len(overlap)} images are also in the training list, e.g. {sorted(overlap)[0]}",
            )
    elif split == "random":
        g = np.random.default_rng(split_seed)
        order = g.permutation(len(on_disk))
        n_test = int(round(test_fraction * len(on_disk)))
        records = {
            "test": [on_disk[i] for i in sorted(order[:n_test])],
            "train": [on_disk[i] for i in sorted(order[n_test:])],
        }
    else:
        raise ValueError(f"split must be 'partition' or 'random', got {split!r}")
    if check_images:
        for name in list(records):
            readable = [image_is_readable(image_root / r[0]) for r in records[name]]
            good = [r for r, ok in zip(records[name], readable) if ok]
            bad = [r[0] for r, ok in zip(records[name], readable) if not ok]
            stats[f"unreadable_{name}"] = len(bad)
            if bad:
                log.warning(
                    "SUN397: %d unreadable image(s) dropped from %s: %s",
                    len(bad),
                    name,
                    ", ".join(bad[:_MAX_EXAMPLES]),
                )
            records[name] = good
    stats.update({f"kept_{k}": len(v) for k, v in records.items()})
    for name, kept in records.items():
        require_rows(
            kept,
            name,
            sources[name],
            root / class_list,
            dropped={
                "not on disk": stats.get(f"missing_{name}", 0),
                "unreadable": stats.get(f"unreadable_{name}", 0),
            },
        )
    return Sun397Index(classes=classes, image_root=image_root, records=records, stats=stats)


# ============================================================================================
# Hashtag mapping
# ============================================================================================


def read_hashtag_vocabulary(rules_file: str | Path) -> list[str]:
    """The hashtags of the rules file, then ``other``: the model's classes."""
    tags = [str(t) for t in (yaml.safe_load(Path(rules_file).read_text()) or {}).get("hashtags", [])]
    return [t for t in tags if t != OTHER] + [OTHER]


def read_hashtag_mapping(path: str | Path) -> dict[str, str]:
    """``{class path: hashtag}`` of a mapping CSV (``class,...,hashtag,...`` header; an empty hashtag is
    ``other``)."""
    path = Path(path)
    reader = csv.reader(
        io.StringIO(
            read_text(path, "the class -> hashtag CSV that python -m experiments.map_hashtags writes"),
            newline="",
        )
    )
    header = next(reader, [])
    if "class" not in header or "hashtag" not in header:
        raise DatasetFormatError(path, "expected a header with 'class' and 'hashtag' columns", line=1)
    c, h = header.index("class"), header.index("hashtag")
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        if len(row) != len(header):
            raise DatasetFormatError(
                path, f"expected {len(header)} fields, got {len(row)}", line=reader.line_num
            )
        if row[c] in out:
            raise DatasetFormatError(
                path,
                f"class {row[c]!r} repeats line {first_line[row[c]]}",
                line=reader.line_num,
                field="class",
            )
        first_line[row[c]] = reader.line_num
        out[row[c]] = row[h] or OTHER
    return out


def class_targets(
    classes: Sequence[str],
    mapping: dict[str, str],
    hashtags: Sequence[str],
    mapping_file: str | Path = "hashtag mapping",
) -> list[int]:
    """Hashtag index of every class.

    Every class must have a row in the mapping (``mapping_file``, for the message): a missing one is an
    error rather than a silent ``other``, since the committed mapping covers all 397 classes, so a gap
    is a typo or a stale file and would relabel a scene. Rows for classes outside ``classes`` (a twin
    or a subset of the release) are ignored, with their count logged.
    """
    known = set(classes)
    missing = [c for c in classes if c not in mapping]
    extra = [c for c in mapping if c not in known]
    if missing:
        hint = (
            f"; it has rows for classes outside the class list, e.g. {extra[:_MAX_EXAMPLES]}" if extra else ""
        )
        raise DatasetFormatError(
            mapping_file,
            f"{len(missing)} class(es) of the class list have no row, e.g. "
            f"{missing[:_MAX_EXAMPLES]}{hint}; map every class to a hashtag or {OTHER!r} "
            "(python -m experiments.map_hashtags)",
            field="class",
        )
    if extra:
        log.info(
            "SUN397: %d row(s) of %s name classes outside the class list (ignored), e.g. %s",
            len(extra),
            mapping_file,
            ", ".join(extra[:_MAX_EXAMPLES]),
        )
    pos = {t: i for i, t in enumerate(hashtags)}
    unknown = sorted({mapping[c] for c in classes if mapping[c] not in pos})
    if unknown:
        raise DatasetFormatError(
            mapping_file, f"hashtags outside the model's vocabulary (rules file): {unknown}", field="hashtag"
        )
    return [pos[mapping[c]] for c in classes]


# ============================================================================================
# LightningDataModule
# ============================================================================================


class Sun397Dataset(Dataset):
    """``{"image": [3, H, W], "label": hashtag index, "scene": class index, "index": i}``.

    ``cache_decoded`` keeps decoded uint8 pixels in memory (small datasets such as the twin).
    """

    def __init__(
        self,
        image_root: Path,
        records: Sequence[tuple[str, int]],
        targets: Sequence[int],
        transform: Callable | None = None,
        cache_decoded: bool = False,
    ) -> None:
        self.image_root = Path(image_root)
        self.records = list(records)
        self.targets = list(targets)
        self.transform = transform
        self.images = DecodedImages(len(self.records), cache_decoded)

    def __len__(self) -> int:
        return len(self.records)

    def decode(self, i: int) -> Image.Image:
        return self.images.load(i, self.image_root / self.records[i][0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.decode(i)
        if self.transform is not None:
            image = self.transform(image)
        scene = self.records[i][1]
        return {"image": image, "label": self.targets[scene], "scene": scene, "index": i}


class Sun397DataModule(SuiteDataModule):
    """SUN397 (real or the synthetic twin) with hashtag labels, for the hashtag scene classifier.

    Args:
        root: folder with ``SUN397/`` (images) and ``Partitions/`` (class list, partition files).
        mapping_file: the class -> hashtag CSV; ``rules_file``: the hashtag vocabulary (both in
            ``conf/hashtags/`` by default: the data config names them).
        split: ``partition`` (official partition ``partition``) or ``random`` (seeded
            ``1 - test_fraction`` / ``test_fraction``).
        val_fraction: share of the training part used for validation (seeded by ``split_seed``).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms` (its ``k`` also drives TTA).
        check_images: open every image once in ``setup`` and drop unreadable ones (counted).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`datamodules.synthetic.sun397.ensure_sun397`).
    """

    synthetic_writer = "datamodules.synthetic.sun397.ensure_sun397"

    def __init__(
        self,
        root: str,
        mapping_file: str,
        rules_file: str,
        split: str = "random",
        partition: int = 1,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        image_dir: str = "SUN397",
        class_list: str = "Partitions/ClassName.txt",
        partitions_dir: str = "Partitions",
        check_images: bool = True,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.transforms = transforms or ImageTransforms()
        self.hashtags: list[str] = []
        self.mapping: dict[str, str] = {}
        self.index: Sun397Index | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        hp = self.hparams
        self.hashtags = read_hashtag_vocabulary(hp.rules_file)
        self.mapping = read_hashtag_mapping(hp.mapping_file)
        self.index = read_sun397(
            self.root,
            split=hp.split,
            partition=hp.partition,
            test_fraction=hp.test_fraction,
            split_seed=hp.split_seed,
            image_dir=hp.image_dir,
            class_list=hp.class_list,
            partitions_dir=hp.partitions_dir,
            check_images=hp.check_images,
        )
        targets = class_targets(self.index.classes, self.mapping, self.hashtags, hp.mapping_file)
        train = self.index.records["train"]
        g = np.random.default_rng(hp.split_seed + 1)
        order = g.permutation(len(train))
        n_val = int(round(hp.val_fraction * len(train)))
        val = [train[i] for i in sorted(order[:n_val])]
        train = [train[i] for i in sorted(order[n_val:])]

        def make(records, transform):
            return Sun397Dataset(
                self.index.image_root, records, targets, transform, cache_decoded=hp.cache_decoded
            )

        self.data_train = make(train, self.transforms.train())
        self.data_val = make(val, self.transforms.eval())
        self.data_test = make(self.index.records["test"], self.transforms.eval())
        present = sorted({targets[c] for _, c in train})
        log.info(
            "SUN397 (%s): %d train / %d val / %d test images, %d scene classes -> %d of %d hashtags; %s",
            hp.split,
            len(train),
            len(val),
            len(self.data_test),
            len(self.index.classes),
            len(present),
            len(self.hashtags),
            ", ".join(f"{k}={v}" for k, v in self.index.stats.items()),
        )

    # ------------------------------------------------------------------ what the model and export need
    def info(self) -> DataInfo:
        return DataInfo(
            label_names=list(self.hashtags),
            num_train=len(self.data_train),
            image_pipeline=self.transforms.describe(),
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "sun397",
            "label_names": list(self.hashtags),
            "other": OTHER,
            "scene_to_hashtag": {c: self.mapping.get(c, OTHER) for c in self.index.classes},
            "transforms": self.transforms.describe(),
        }
