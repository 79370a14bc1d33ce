"""NUS-WIDE reader and compact index.

Reads a NUS-WIDE release (the real one or the synthetic twin of
:mod:`datamodules.synthetic.nuswide`) laid out as the publishers ship it::

    ConceptsList/Concepts81.txt                              81 concept names
    NUS_WID_Tags/TagList1k.txt                               1000 user tags
    NUS_WID_Tags/{Train,Test}_Tags1k.dat                     1000 x 0/1 per row
    ImageList/{Train,Test}Imagelist.txt                      <dir>\\<NNNN>_<flickrid>.jpg per row
    Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt   one 0/1 per row
    <image_dir>/<dir>/<NNNN>_<flickrid>.jpg                  images (``Flickr`` by default)

Rows of the label and tag files are aligned with the split's image list. The text files may use
CRLF or LF, carry trailing tabs/spaces, a UTF-8 BOM, or lack the final newline. Every format
problem raises :class:`~datamodules.errors.DatasetFormatError` naming the file and the line.

As in the papers that use NUS-WIDE with user tags, images without any of the 1000 tags are
dropped; images listed but missing on disk are dropped too (with a warning), and so are repeats of
an image already listed in the same split (counted; a repeat with other labels or tags is logged as
a warning naming both lines). A split left empty is an error. Images without any concept label
are kept. :func:`build_index` stores the result as a compact ndjson file that :func:`load_index`
reads back without touching the release.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import (
    DatasetFormatError,
    DuplicateRows,
    decode_utf8,
    json_field,
    read_json_header,
    read_jsonl,
    read_lines,
    require_rows,
)
from datamodules.preprocessing.images import ImageTransforms

log = logging.getLogger(__name__)

NUM_CONCEPTS = 81
NUM_TAGS = 1000
SPLITS = ("train", "test")
INDEX_FORMAT = "nuswide-index"
INDEX_VERSION = 1
INDEX_FILENAME = "nuswide.ndjson"

CONCEPTS_FILE = Path("ConceptsList", "Concepts81.txt")
TAGLIST_FILE = Path("NUS_WID_Tags", "TagList1k.txt")
_SPLIT_FILE_WORD = {"train": "Train", "test": "Test"}
_MAX_EXAMPLES = 5


@dataclass
class NusWideRecord:
    """One image: posix path relative to the image folder, split, concept and tag indices."""

    image: str
    split: str
    labels: list[int]
    tags: list[int]


@dataclass
class NusWideIndex:
    """The usable part of a NUS-WIDE release.

    ``stats`` maps ``listed``, ``duplicate_images``, ``dropped_untagged``, ``missing_images``, ``kept`` and
    ``unlabeled_kept`` to ``{"train": n, "test": m, "total": n + m}``.
    """

    concepts: list[str]
    tags: list[str]
    records: list[NusWideRecord]
    stats: dict[str, Any] = field(default_factory=dict)
    image_root: str = ""

    def split(self, name: str) -> list[NusWideRecord]:
        """The records of split ``name`` (``"train"`` or ``"test"``), in release order."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return [r for r in self.records if r.split == name]

    def arrays(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense multi-hot ``(labels [n, 81], tags [n, 1000])`` uint8 arrays of one or all splits."""
        records = self.records if split is None else self.split(split)
        return (
            multi_hot([r.labels for r in records], len(self.concepts)),
            multi_hot([r.tags for r in records], len(self.tags)),
        )


def multi_hot(index_lists: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Rows of indices -> a dense ``[len(index_lists), width]`` uint8 0/1 matrix (vectorised)."""
    lengths = np.fromiter((len(row) for row in index_lists), dtype=np.int64, count=len(index_lists))
    matrix = np.zeros((len(index_lists), width), dtype=np.uint8)
    if lengths.sum():
        rows = np.repeat(np.arange(len(index_lists)), lengths)
        matrix[rows, np.concatenate([np.asarray(row, dtype=np.int64) for row in index_lists])] = 1
    return matrix


# --------------------------------------------------------------------------------------------
# Low-level parsing
# --------------------------------------------------------------------------------------------


def _check_aligned(path: Path, rows: int, aligned_with: Path, expected: int) -> None:
    if rows != expected:
        raise DatasetFormatError(
            path,
            f"has {rows} rows but {aligned_with} lists {expected} images; the two files must be row-aligned",
            line=min(rows, expected) + 1,
        )


def read_name_list(path: Path, expected: int, contents: str) -> list[str]:
    """A list of ``expected`` distinct, non-empty names, one per line (surrounding blanks ignored)."""
    path = Path(path)
    lines = read_lines(path, contents)
    names: list[str] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        name = decode_utf8(raw, path, number).strip()
        if not name:
            raise DatasetFormatError(path, "empty line; expected a name", line=number)
        if name in first_seen:
            raise DatasetFormatError(
                path, f"duplicate name {name!r} (first on line {first_seen[name]})", line=number
            )
        first_seen[name] = number
        names.append(name)
    if len(names) != expected:
        raise DatasetFormatError(path, f"expected {expected} names, found {len(names)}")
    return names


def read_concepts(path: Path) -> list[str]:
    """Parse ``ConceptsList/Concepts81.txt``: the 81 concept names in label-column order."""
    return read_name_list(path, NUM_CONCEPTS, f"the {NUM_CONCEPTS} concept names, one per line")


def read_tag_list(path: Path) -> list[str]:
    """Parse ``NUS_WID_Tags/TagList1k.txt``: the 1000 user tags in tag-column order."""
    return read_name_list(path, NUM_TAGS, f"the {NUM_TAGS} user tags, one per line")


def read_image_list(path: Path) -> list[str]:
    """Parse an image list: one Windows-style relative path per line, returned as posix paths."""
    lines = read_lines(path, r"one image path per line, like actor\0001_2124494179.jpg")
    images: list[str] = []
    for number, raw in enumerate(lines, start=1):
        image = decode_utf8(raw, path, number).strip().replace("\\", "/")
        if not image:
            raise DatasetFormatError(path, "empty line; expected an image path", line=number)
        images.append(image)
    return images


def _first_bad_value(values: Sequence[bytes]) -> tuple[int, str]:
    """Index and text of the first value that is not 0 or 1."""
    bad = next(i for i, value in enumerate(values) if value not in (b"0", b"1"))
    return bad, values[bad].decode("utf-8", errors="replace")


def read_binary_column(path: Path, aligned_with: Path, expected_rows: int) -> np.ndarray:
    """Parse a label file (one 0/1 per line) into a uint8 vector row-aligned with ``aligned_with``."""
    contents = f"one 0/1 label per line for each image of {aligned_with.name}"
    values = [line.strip() for line in read_lines(path, contents)]
    _check_aligned(path, len(values), aligned_with, expected_rows)
    joined = b"".join(values)
    if len(joined) != len(values) or joined.translate(None, b"01"):
        bad, text = _first_bad_value(values)
        raise DatasetFormatError(path, f"expected 0 or 1, found {text!r}", line=bad + 1)
    return np.frombuffer(joined, dtype=np.uint8) - ord("0")


def read_binary_rows(path: Path, width: int, aligned_with: Path, expected_rows: int) -> list[list[int]]:
    """Parse a 0/1 matrix file (``width`` blank-separated values per row) into the 1-columns per row."""
    contents = f"one row of {width} blank-separated 0/1 values per image of {aligned_with.name}"
    lines = read_lines(path, contents)
    _check_aligned(path, len(lines), aligned_with, expected_rows)
    rows: list[list[int]] = []
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != width:
            raise DatasetFormatError(path, f"expected {width} columns, found {len(tokens)}", line=number)
        joined = b"".join(tokens)
        if len(joined) != width or joined.translate(None, b"01"):
            bad, text = _first_bad_value(tokens)
            raise DatasetFormatError(
                path,
                f"expected 0 or 1, found {text!r}",
                line=number,
                field=f"column {bad + 1}",
            )
        rows.append(np.flatnonzero(np.frombuffer(joined, dtype=np.uint8) == ord("1")).tolist())
    return rows


# --------------------------------------------------------------------------------------------
# Reading a release
# --------------------------------------------------------------------------------------------


@dataclass
class _SplitRows:
    """One split as listed in the release, before filtering."""

    images: list[str]
    labels: np.ndarray
    tags: list[list[int]]
    image_list: Path
    tag_file: Path


def _read_split(root: Path, split: str, concepts: Sequence[str]) -> _SplitRows:
    word = _SPLIT_FILE_WORD[split]
    image_list = root / "ImageList" / f"{word}Imagelist.txt"
    images = read_image_list(image_list)
    labels = np.zeros((len(images), len(concepts)), dtype=np.uint8)
    for j, concept in enumerate(concepts):
        label_file = root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_{word}.txt"
        labels[:, j] = read_binary_column(label_file, image_list, len(images))
    tag_file = root / "NUS_WID_Tags" / f"{word}_Tags1k.dat"
    tags = read_binary_rows(tag_file, NUM_TAGS, image_list, len(images))
    return _SplitRows(images, labels, tags, image_list, tag_file)


def _keep_split(
    rows: _SplitRows, split: str, image_root: Path, check_images: bool
) -> tuple[list[NusWideRecord], dict[str, int], list[str]]:
    """Drop repeated, untagged (and, if checked, missing) images; return records, counts, missing paths."""
    records: list[NusWideRecord] = []
    missing: list[str] = []
    untagged = 0
    repeats = DuplicateRows(rows.image_list)
    for number, (image, labels, tags) in enumerate(zip(rows.images, rows.labels, rows.tags), start=1):
        label_list = np.flatnonzero(labels).tolist()
        if not repeats.is_new(image, (label_list, tags), number):
            continue
        if not tags:
            untagged += 1
        elif check_images and not (image_root / image).is_file():
            missing.append(image)
        else:
            records.append(NusWideRecord(image, split, label_list, tags))
    repeats.log(log)
    counts = {
        "listed": len(rows.images),
        "duplicate_images": repeats.dropped,
        "dropped_untagged": untagged,
        "missing_images": len(missing),
        "kept": len(records),
        "unlabeled_kept": sum(not r.labels for r in records),
    }
    return records, counts, missing


def read_nuswide(root: str | Path, *, image_dir: str = "Flickr", check_images: bool = True) -> NusWideIndex:
    """Read a NUS-WIDE release under ``root`` (images under ``root/image_dir``).

    Images without any of the 1000 tags are dropped; with ``check_images`` images missing on
    disk are dropped too and reported with a logged warning. Both are counted in ``stats``.
    """
    root = Path(root)
    concepts = read_concepts(root / CONCEPTS_FILE)
    tags = read_tag_list(root / TAGLIST_FILE)
    image_root = root / image_dir
    if check_images and not image_root.is_dir():
        raise DatasetFormatError(image_root, "missing image folder; it should hold <dir>/<file>.jpg")
    records: list[NusWideRecord] = []
    per_split: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    sources: dict[str, tuple[Path, Path]] = {}
    for split in SPLITS:
        rows = _read_split(root, split, concepts)
        kept, per_split[split], split_missing = _keep_split(rows, split, image_root, check_images)
        sources[split] = (rows.image_list, rows.tag_file)
        records += kept
        missing += split_missing
    stats = {
        key: {**{s: per_split[s][key] for s in SPLITS}, "total": sum(c[key] for c in per_split.values())}
        for key in per_split[SPLITS[0]]
    }
    log.info("NUS-WIDE %s: dropped %d images without tags", root, stats["dropped_untagged"]["total"])
    if missing:
        log.warning(
            "NUS-WIDE %s: dropped %d listed images missing under %s, e.g. %s",
            root,
            len(missing),
            image_root,
            ", ".join(missing[:_MAX_EXAMPLES]),
        )
    for split in SPLITS:
        dropped = {
            "repeated images": stats["duplicate_images"][split],
            "images without tags": stats["dropped_untagged"][split],
            "images missing on disk": stats["missing_images"][split],
        }
        require_rows([r for r in records if r.split == split], split, *sources[split], dropped=dropped)
    return NusWideIndex(concepts, tags, records, stats, str(image_root.resolve()))


# --------------------------------------------------------------------------------------------
# Compact index
# --------------------------------------------------------------------------------------------


def build_index(root: str | Path, out_path: str | Path, **read_kwargs: Any) -> Path:
    """Read the release under ``root`` (see :func:`read_nuswide`) and write its ndjson index.

    Line 1 is a JSON header (format, version, concepts, tags, stats, image_root); each further
    line is one record. The file is written to a temporary sibling and renamed into place.
    """
    index = read_nuswide(root, **read_kwargs)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "concepts": index.concepts,
        "tags": index.tags,
        "stats": index.stats,
        "image_root": index.image_root,
    }
    tmp_path = out_path.with_name(f".{out_path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp_path.open("x", encoding="utf-8", newline="\n") as out:
            out.write(json.dumps(header, separators=(",", ":")) + "\n")
            for record in index.records:
                out.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return out_path


def _indices(obj: dict[str, Any], name: str, size: int, path: Path, line: int) -> list[int]:
    values = json_field(obj, name, list, path, line)
    if not all(isinstance(v, int) and 0 <= v < size for v in values):
        raise DatasetFormatError(path, f"expected integers in [0, {size})", line=line, field=name)
    return values


def _record(obj: dict[str, Any], index: NusWideIndex, path: Path, line: int) -> NusWideRecord:
    split = json_field(obj, "split", str, path, line)
    if split not in SPLITS:
        raise DatasetFormatError(path, f"unknown split {split!r}", line=line, field="split")
    return NusWideRecord(
        image=json_field(obj, "image", str, path, line),
        split=split,
        labels=_indices(obj, "labels", len(index.concepts), path, line),
        tags=_indices(obj, "tags", len(index.tags), path, line),
    )


def load_index(path: str | Path) -> NusWideIndex:
    """Read an index written by :func:`build_index`, validating the header and every record."""
    path = Path(path)
    lines = read_jsonl(path, "a NUS-WIDE index; build it with build_index")
    if not lines:
        raise DatasetFormatError(path, "empty index file; expected a JSON header line", line=1)
    header = lines[0][1]
    if header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION:
        raise DatasetFormatError(
            path, f"not a {INDEX_FORMAT} version {INDEX_VERSION} header", line=1, field="format"
        )
    index = NusWideIndex(
        concepts=json_field(header, "concepts", list, path, 1),
        tags=json_field(header, "tags", list, path, 1),
        records=[],
        stats=json_field(header, "stats", dict, path, 1),
        image_root=json_field(header, "image_root", str, path, 1),
    )
    index.records = [_record(obj, index, path, number) for number, obj in lines[1:]]
    kept = index.stats.get("kept")
    expected = kept.get("total") if isinstance(kept, dict) else None
    if expected is not None and expected != len(index.records):
        raise DatasetFormatError(
            path, f"header says {expected} records but the file holds {len(index.records)}; truncated?"
        )
    return index


# ============================================================================================
# LightningDataModule
# ============================================================================================


class NusWideDataset(Dataset):
    """Samples of the index as ``{"image": [3, H, W], "tags": [N], "labels": [C], "index": i}``.

    Tags and labels stay as index lists until an item is read: the real training split is 160 k
    images x 1,000 tags. With ``cache_decoded`` every image is decoded once and kept in memory as
    uint8 pixels (for small datasets such as the synthetic twin; the cache lives per worker process).
    """

    def __init__(
        self,
        image_root: Path,
        records: Sequence[NusWideRecord],
        num_labels: int,
        num_tags: int,
        transform: Callable | None = None,
        cache_decoded: bool = False,
    ) -> None:
        self.image_root = Path(image_root)
        self.records = list(records)
        self.num_labels, self.num_tags = num_labels, num_tags
        self.transform = transform
        self.images = DecodedImages(len(self.records), cache_decoded)

    def __len__(self) -> int:
        return len(self.records)

    def _multi_hot(self, idx: Sequence[int], size: int) -> torch.Tensor:
        vec = torch.zeros(size)
        if idx:
            vec[torch.as_tensor(idx, dtype=torch.long)] = 1.0
        return vec

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec = self.records[i]
        image = self.images.load(i, self.image_root / rec.image)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "tags": self._multi_hot(rec.tags, self.num_tags),
            "labels": self._multi_hot(rec.labels, self.num_labels),
            "index": i,
        }


class NusWideDataModule(SuiteDataModule):
    """NUS-WIDE (real release or its synthetic twin) for the multi-label tagger.

    ``prepare`` (once per node) builds the compact ndjson index if it is missing or was built from
    another root; ``setup`` reads the index, keeps the official test split and carves a seeded
    validation part out of the official train split.

    Args:
        root: the release folder (``ConceptsList/``, ``Groundtruth/``, ``NUS_WID_Tags/``, ``ImageList/``).
        image_dir: folder of the images, relative to ``root`` (or absolute).
        index_path: where the compact index lives (default ``<root>/index.ndjson``).
        check_images: drop (and count) images missing on disk when building the index.
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        val_fraction: share of the official train split used for validation.
        cache_decoded: keep decoded images in memory (small datasets only).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`~datamodules.synthetic.nuswide.ensure_nuswide`).
    """

    synthetic_writer = "datamodules.synthetic.nuswide.ensure_nuswide"

    def __init__(
        self,
        root: str,
        image_dir: str = "Flickr",
        index_path: str | None = None,
        check_images: bool = True,
        transforms: ImageTransforms | None = None,
        val_fraction: float = 0.1,
        cache_decoded: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.index_path = Path(index_path) if index_path else self.root / "index.ndjson"
        self.transforms = transforms or ImageTransforms()
        self.index: NusWideIndex | None = None

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        if not self._index_is_current():
            log.info("building the NUS-WIDE index %s from %s", self.index_path, self.root)
            build_index(
                self.root,
                self.index_path,
                image_dir=self.hparams.image_dir,
                check_images=self.hparams.check_images,
            )

    def _index_is_current(self) -> bool:
        if not self.index_path.is_file():
            return False
        header = read_json_header(self.index_path)  # a broken one raises, naming the file and line 1
        return Path(header.get("image_root", "")) == self._image_root()

    def _image_root(self) -> Path:
        return (self.root / self.hparams.image_dir).resolve()

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        self.index = load_index(self.index_path)
        train = [r for r in self.index.records if r.split == "train"]
        test = [r for r in self.index.records if r.split == "test"]
        for split, rows in (("train", train), ("test", test)):  # an index written before this check
            require_rows(rows, split, self.index_path)
        g = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(train), generator=g).tolist()
        n_val = int(round(self.hparams.val_fraction * len(train)))
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        make = partial(
            NusWideDataset,
            Path(self.index.image_root),
            num_labels=len(self.index.concepts),
            num_tags=len(self.index.tags),
            cache_decoded=self.hparams.cache_decoded,
        )
        self.data_train = make([train[i] for i in train_idx], transform=self.transforms.train())
        self.data_val = make([train[i] for i in val_idx], transform=self.transforms.eval())
        self.data_test = make(test, transform=self.transforms.eval())
        log.info(
            "NUS-WIDE: %d train / %d val / %d test images (%s)",
            len(self.data_train),
            len(self.data_val),
            len(self.data_test),
            ", ".join(f"{k}={v}" for k, v in self.index.stats.items()),
        )

    # ------------------------------------------------------------------ what the model and export need
    def info(self) -> DataInfo:
        return DataInfo(
            label_names=list(self.index.concepts),
            tag_names=list(self.index.tags),
            num_train=len(self.data_train),
            image_pipeline=self.transforms.describe(),
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "nuswide",
            "label_names": list(self.index.concepts),
            "tag_names": list(self.index.tags),
            "transforms": self.transforms.describe(),
        }
