"""NUS-WIDE reader and compact index.

Reads a NUS-WIDE release (the real one or a twin of :mod:`datamodules.synthetic.nuswide`) laid out
as the publishers ship it::

    ConceptsList/Concepts81.txt                              81 concept names
    NUS_WID_Tags/TagList1k.txt                               1000 user tags
    NUS_WID_Tags/{Train,Test}_Tags1k.dat                     1000 x 0/1 per row
    ImageList/{Train,Test}Imagelist.txt                      <dir>\\<NNNN>_<flickrid>.jpg per row
    Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt   one 0/1 per row
    <image_dir>/<dir>/<NNNN>_<flickrid>.jpg                  images (``Flickr`` by default)

Rows of the label and tag files are aligned with the split's image list. The text files may use
CRLF or LF, carry trailing tabs/spaces, a UTF-8 BOM, or lack the final newline. Every format
problem raises :class:`~datamodules.errors.DatasetFormatError` naming the file and the line. The
0/1 files (the real tag matrices are 540 MB of text) are parsed a block of rows at a time with
array operations; a block that breaks the format is read again line by line for the message.

What is kept (every drop is counted in ``stats``; a split left empty is an error):

* the first row of an image listed twice in a split (a repeat with other labels or tags is logged
  as a warning naming both lines);
* images with at least one of the 1000 tags (the seed: images without any tag are filtered out);
* images with at least one of the 81 concept labels (``drop_unlabeled``, the default: the seed's
  Table 4.1 has at least one label per image in both splits; ``False`` keeps them, counted as
  ``unlabeled_kept``);
* with ``check_images``, images present and readable on disk (:func:`~datamodules.base.image_is_readable`:
  the header parses and a JPEG is not cut short; checked once, in parallel, when the index is
  built). Missing and unreadable images are dropped with a warning.

:func:`build_index` stores the result in one file: a JSON header line (names, counts, the source
files' sizes and modification times, the settings) followed by arrays (the image paths as one byte
string with offsets, split codes, bit-packed label and tag rows, a stable hash of each image path),
which :func:`load_index` memory-maps, so every process (DDP ranks, loader workers) shares one copy
in the page cache. An index is rebuilt when a source file or a setting changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule, image_is_readable
from datamodules.errors import (
    DatasetFormatError,
    DuplicateRows,
    json_field,
    read_bytes,
    read_json_header,
    require_rows,
    text_lines,
)
from datamodules.files import atomic_path
from datamodules.index_state import file_stamp, subfolder_times
from datamodules.preprocessing.images import ImageTransforms

log = logging.getLogger(__name__)

NUM_CONCEPTS = 81
NUM_TAGS = 1000
SPLITS = ("train", "test")
INDEX_FORMAT = "nuswide-index"
INDEX_VERSION = 2
INDEX_FILENAME = "nuswide_index.bin"

CONCEPTS_FILE = Path("ConceptsList", "Concepts81.txt")
TAGLIST_FILE = Path("NUS_WID_Tags", "TagList1k.txt")
_SPLIT_FILE_WORD = {"train": "Train", "test": "Test"}
_MAX_EXAMPLES = 5
_ALIGN = 64  # byte alignment of every array in the index file
_BLOCK_BYTES = 1 << 24  # text parsed per array operation (bounds the temporary memory)
_PARALLEL_CHECK_MIN = 4096  # fewer images are checked in this process

# Byte classes of the 0/1 files: the values, and the blanks that bytes.split() separates on.
_IS_DIGIT = np.zeros(256, dtype=bool)
_IS_DIGIT[[ord("0"), ord("1")]] = True
_IS_BLANK = np.zeros(256, dtype=bool)
_IS_BLANK[[9, 10, 11, 12, 13, 32]] = True

_STAT_KEYS = (
    "listed",
    "duplicate_images",
    "dropped_untagged",
    "dropped_unlabeled",
    "missing_images",
    "unreadable_images",
    "kept",
    "unlabeled_kept",
)
_ARRAYS = ("paths", "path_offsets", "split_codes", "label_bits", "tag_bits", "image_hash")
#: The other fields of an index, stored in its header (in this order) with their JSON types.
_HEADER_FIELDS = dict(concepts=list, tags=list, stats=dict, image_root=str, sources=dict, settings=dict)


@dataclass
class NusWideRecord:
    """One image: posix path relative to the image folder, split, concept and tag indices."""

    image: str
    split: str
    labels: list[int]
    tags: list[int]


@dataclass(eq=False)
class NusWideIndex:
    """The usable part of a NUS-WIDE release, as compact arrays (row ``i`` is one image).

    Attributes:
        concepts, tags: the 81 concept and 1000 tag names (column order).
        paths, path_offsets: image ``i``'s path (posix, relative to ``image_root``, UTF-8) is
            ``paths[path_offsets[i]:path_offsets[i + 1]]``.
        split_codes: 0 for the official train split, 1 for test (train rows first, release order).
        label_bits, tag_bits: rows of ``np.packbits`` over the 81 labels / 1000 tags.
        image_hash: a stable 64-bit hash of each path (validation membership, :func:`validation_mask`).
        stats: ``listed``, ``duplicate_images``, ``dropped_untagged``, ``dropped_unlabeled``,
            ``missing_images``, ``unreadable_images``, ``kept`` and ``unlabeled_kept``, each
            ``{"train": n, "test": m, "total": n + m}``.
        sources: ``{file: [size, mtime_ns]}`` of the files read (stale-index detection).
        settings: what else the index depends on (image folder, checks, filters).
        path: the index file the arrays are mapped from (``None``: built in memory).
    """

    concepts: list[str]
    tags: list[str]
    paths: np.ndarray
    path_offsets: np.ndarray
    split_codes: np.ndarray
    label_bits: np.ndarray
    tag_bits: np.ndarray
    image_hash: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    image_root: str = ""
    sources: dict[str, list[int]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.split_codes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NusWideIndex):
            return NotImplemented
        same_values = all(getattr(self, name) == getattr(other, name) for name in _HEADER_FIELDS)
        return same_values and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in _ARRAYS)

    def __reduce__(self):  # a mapped index travels as its file name (spawned workers map it again)
        if self.path is not None:
            return load_index, (self.path,)
        return super().__reduce__()

    # ------------------------------------------------------------------ one image
    def image(self, i: int) -> str:
        """Path of image ``i`` relative to ``image_root`` (posix)."""
        return bytes(self.paths[self.path_offsets[i] : self.path_offsets[i + 1]]).decode("utf-8")

    def label_vector(self, i: int) -> np.ndarray:
        """0/1 float32 vector of image ``i``'s concepts."""
        return np.unpackbits(self.label_bits[i], count=len(self.concepts)).astype(np.float32)

    def tag_vector(self, i: int) -> np.ndarray:
        """0/1 float32 vector of image ``i``'s user tags."""
        return np.unpackbits(self.tag_bits[i], count=len(self.tags)).astype(np.float32)

    def record(self, i: int) -> NusWideRecord:
        return NusWideRecord(
            self.image(i),
            SPLITS[self.split_codes[i]],
            np.flatnonzero(self.label_vector(i)).tolist(),
            np.flatnonzero(self.tag_vector(i)).tolist(),
        )

    # ------------------------------------------------------------------ many images
    def rows(self, split: str) -> np.ndarray:
        """Row numbers of split ``split`` (``"train"`` or ``"test"``), in release order."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(np.asarray(self.split_codes) == SPLITS.index(split))

    def split(self, name: str) -> list[NusWideRecord]:
        """The records of split ``name`` as Python objects (for inspection and small data)."""
        return [self.record(i) for i in self.rows(name)]

    @property
    def records(self) -> list[NusWideRecord]:
        """Every image as a Python object (for inspection and small data: 269k of them take ~0.5 GB)."""
        return [self.record(i) for i in range(len(self))]

    def arrays(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense multi-hot ``(labels [n, 81], tags [n, 1000])`` uint8 arrays of one or all splits."""
        rows = np.arange(len(self)) if split is None else self.rows(split)
        return (
            np.unpackbits(self.label_bits[rows], axis=1, count=len(self.concepts)),
            np.unpackbits(self.tag_bits[rows], axis=1, count=len(self.tags)),
        )


def multi_hot(index_lists: Sequence[Sequence[int]], width: int) -> np.ndarray:
    """Rows of indices -> a dense ``[len(index_lists), width]`` uint8 0/1 matrix (vectorised)."""
    lengths = np.fromiter((len(row) for row in index_lists), dtype=np.int64, count=len(index_lists))
    matrix = np.zeros((len(index_lists), width), dtype=np.uint8)
    if lengths.sum():
        rows = np.repeat(np.arange(len(index_lists)), lengths)
        matrix[rows, np.concatenate([np.asarray(row, dtype=np.int64) for row in index_lists])] = 1
    return matrix


def path_hashes(paths: Sequence[str]) -> np.ndarray:
    """A stable (platform- and process-independent) 64-bit hash of each path: BLAKE2b, 8 bytes."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(p.encode("utf-8"), digest_size=8).digest(), "little") for p in paths),
        dtype=np.uint64,
        count=len(paths),
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (a bijective mix of 64-bit integers), elementwise, wrapping."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def validation_mask(image_hash: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which images form the validation part: image ``i`` is in it when a uniform number drawn from
    ``(image_hash[i], seed)`` alone is below ``fraction``.

    Membership is a function of the image's own id, so adding or removing other images never moves
    an image between training and validation; the validation size is ``fraction`` of the images up
    to binomial noise (sd ``sqrt(n f (1 - f))``), not an exact count.
    """
    with np.errstate(over="ignore"):
        seed_mix = _splitmix64(np.array([seed], dtype=np.uint64))[0]
        mixed = _splitmix64(np.asarray(image_hash, dtype=np.uint64) ^ seed_mix)
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


# --------------------------------------------------------------------------------------------
# Low-level parsing
# --------------------------------------------------------------------------------------------


def _stripped_lines(path: Path, contents: str, what: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line, surrounding blanks removed; an empty line raises."""
    for number, text in text_lines(path, contents):
        if not text.strip():
            raise DatasetFormatError(path, f"empty line; expected {what}", line=number)
        yield number, text.strip()


def read_name_list(path: Path, expected: int, contents: str) -> list[str]:
    """A list of ``expected`` distinct, non-empty names, one per line (surrounding blanks ignored)."""
    first_seen: dict[str, int] = {}  # in file order: the names
    for number, name in _stripped_lines(path, contents, "a name"):
        if name in first_seen:
            raise DatasetFormatError(
                path, f"duplicate name {name!r} (first on line {first_seen[name]})", line=number
            )
        first_seen[name] = number
    if len(first_seen) != expected:
        raise DatasetFormatError(path, f"expected {expected} names, found {len(first_seen)}")
    return list(first_seen)


def read_concepts(path: Path) -> list[str]:
    """Parse ``ConceptsList/Concepts81.txt``: the 81 concept names in label-column order."""
    return read_name_list(path, NUM_CONCEPTS, f"the {NUM_CONCEPTS} concept names, one per line")


def read_tag_list(path: Path) -> list[str]:
    """Parse ``NUS_WID_Tags/TagList1k.txt``: the 1000 user tags in tag-column order."""
    return read_name_list(path, NUM_TAGS, f"the {NUM_TAGS} user tags, one per line")


def read_image_list(path: Path) -> list[str]:
    """Parse an image list: one Windows-style relative path per line, returned as posix paths."""
    contents = r"one image path per line, like actor\0001_2124494179.jpg"
    return [image.replace("\\", "/") for _, image in _stripped_lines(path, contents, "an image path")]


def _line_bounds(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive, before the newline) of every line, trailing blank lines dropped
    (the lines :func:`~datamodules.errors.read_lines` returns)."""
    first = np.flatnonzero(data[:_BLOCK_BYTES] == 10)
    stride = int(first[0]) + 1 if len(first) else 0
    if stride and len(data) % stride == 0 and (data[stride - 1 :: stride] == 10).all():
        starts = np.arange(0, len(data), stride, dtype=np.int64)  # every line equally long (the usual)
        ends = starts + (stride - 1)
    else:
        newlines = [
            np.flatnonzero(data[a : a + _BLOCK_BYTES] == 10) + a for a in range(0, len(data), _BLOCK_BYTES)
        ]
        ends_at = np.concatenate(newlines) if newlines else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], ends_at + 1]).astype(np.int64)
        ends = np.concatenate([ends_at, [len(data)]]).astype(np.int64)
    rows = len(starts)
    while rows and _IS_BLANK[data[starts[rows - 1] : ends[rows - 1]]].all():
        rows -= 1
    return starts[:rows], ends[:rows]


def _check_zero_one_line(path: Path, line: bytes, number: int, width: int) -> None:
    """Raise the error of a row that is not ``width`` blank-separated 0/1 values (a label file's
    row, ``width`` 1, is one value: its blanks are part of it)."""
    values = line.split() if width > 1 else [line.strip()]
    if len(values) != width:
        raise DatasetFormatError(path, f"expected {width} columns, found {len(values)}", line=number)
    bad = next((i for i, value in enumerate(values) if value not in (b"0", b"1")), None)
    if bad is not None:
        text = values[bad].decode("utf-8", errors="replace")
        column = f"column {bad + 1}" if width > 1 else None
        raise DatasetFormatError(path, f"expected 0 or 1, found {text!r}", line=number, field=column)


def _uniform_block(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray | None:
    """The ``[rows, width]`` bool values of rows laid out exactly like the first one (equal length,
    blanks at the same places, a 0/1 wherever the first row has one), or ``None``."""
    length = int(ends[0] - starts[0])
    if not ((ends - starts) == length).all() or not (np.diff(starts) == length + 1).all():
        return None
    rows = np.lib.stride_tricks.as_strided(
        data[starts[0] :], shape=(len(starts), length), strides=(length + 1, 1)
    )
    template = rows[0]
    digit = _IS_DIGIT[template]
    columns = np.flatnonzero(digit)
    if len(columns) != width or not _IS_BLANK[template[~digit]].all() or (np.diff(columns) == 1).any():
        return None
    # "0" | 1 == "1" | 1 == "1", and no other byte ORs to "1": one comparison checks every byte.
    or_mask = digit.view(np.uint8)
    if not ((rows | or_mask) == (template | or_mask)).all():
        return None
    step = int(columns[1] - columns[0]) if width > 1 else 1
    if width > 1 and (np.diff(columns) == step).all():
        values = rows[:, columns[0] : columns[-1] + 1 : step]  # a strided view: no gather
    else:
        values = rows[:, columns]
    return values == ord("1")


def _zero_one_blocks(
    path: Path, contents: str, width: int, aligned_with: Path, expected_rows: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Parse a file of rows of ``width`` blank-separated 0/1 values (``expected_rows`` of them,
    row-aligned with ``aligned_with``), a block of rows at a time: yields ``(first row, end row,
    [rows, width] bool)``.

    A block is accepted when its rows share the first row's layout (:func:`_uniform_block`, the
    usual case), or when it holds only 0/1 and blanks, no two values touch and every row has
    ``width`` values; otherwise its lines are checked one by one (:func:`_check_zero_one_line`) for
    the error of the first bad one.
    """
    data = np.frombuffer(read_bytes(path, contents), dtype=np.uint8)
    starts, ends = _line_bounds(data)
    if len(starts) != expected_rows:
        raise DatasetFormatError(
            path,
            f"has {len(starts)} rows but {aligned_with} lists {expected_rows} images; the two files must "
            "be row-aligned",
            line=min(len(starts), expected_rows) + 1,
        )
    step = max(1, _BLOCK_BYTES // (2 * width + 2))
    for r0 in range(0, len(starts), step):
        r1 = min(len(starts), r0 + step)
        uniform = _uniform_block(data, starts[r0:r1], ends[r0:r1], width)
        if uniform is not None:
            yield r0, r1, uniform
            continue
        first, last = starts[r0], ends[r1 - 1]
        block = data[first:last]
        digit = _IS_DIGIT[block]
        valid = bool((digit | _IS_BLANK[block]).all()) and not bool((digit[1:] & digit[:-1]).any())
        if valid:
            counts = np.add.reduceat(digit.view(np.uint8), starts[r0:r1] - first, dtype=np.int64)
            valid = bool((counts == width).all())
        if not valid:
            for row in range(r0, r1):
                _check_zero_one_line(path, bytes(data[starts[row] : ends[row]]), row + 1, width)
            raise DatasetFormatError(path, f"rows {r0 + 1}-{r1}: expected {width} 0/1 values per row")
        yield r0, r1, (block[digit] == ord("1")).reshape(r1 - r0, width)


def read_binary_column(path: Path, aligned_with: Path, expected_rows: int) -> np.ndarray:
    """Parse a label file (one 0/1 per line) into a uint8 vector row-aligned with ``aligned_with``."""
    contents = f"one 0/1 label per line for each image of {aligned_with.name}"
    column = np.empty(expected_rows, dtype=np.uint8)
    for r0, r1, values in _zero_one_blocks(Path(path), contents, 1, aligned_with, expected_rows):
        column[r0:r1] = values[:, 0]
    return column


def read_binary_rows(path: Path, width: int, aligned_with: Path, expected_rows: int) -> np.ndarray:
    """Parse a 0/1 matrix file (``width`` blank-separated values per row, row-aligned with
    ``aligned_with``) into bit-packed rows: ``np.packbits`` of each row, ``[rows, ceil(width / 8)]``."""
    contents = f"one row of {width} blank-separated 0/1 values per image of {aligned_with.name}"
    packed = np.empty((expected_rows, (width + 7) // 8), dtype=np.uint8)
    for r0, r1, values in _zero_one_blocks(Path(path), contents, width, aligned_with, expected_rows):
        packed[r0:r1] = np.packbits(values, axis=1)
    return packed


# --------------------------------------------------------------------------------------------
# Reading a release
# --------------------------------------------------------------------------------------------


@dataclass
class _SplitRows:
    """One split as listed in the release, and which of its rows survive the filters."""

    images: list[str]
    labels: np.ndarray  # bool [n, C]
    tag_bits: np.ndarray  # uint8 [n, ceil(N / 8)]
    image_list: Path
    tag_file: Path
    keep: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    counts: dict[str, int] = field(default_factory=dict)


def _split_files(root: Path, split: str, concepts: Sequence[str]) -> tuple[Path, Path, list[Path]]:
    """Image list, tag file and label files (concept order) of ``split``."""
    word = _SPLIT_FILE_WORD[split]
    labels = [root / "Groundtruth" / "TrainTestLabels" / f"Labels_{c}_{word}.txt" for c in concepts]
    return root / "ImageList" / f"{word}Imagelist.txt", root / "NUS_WID_Tags" / f"{word}_Tags1k.dat", labels


def _read_split(root: Path, split: str, concepts: Sequence[str]) -> _SplitRows:
    image_list, tag_file, label_files = _split_files(root, split, concepts)
    images = read_image_list(image_list)
    labels = np.zeros((len(images), len(concepts)), dtype=bool)
    for j, label_file in enumerate(label_files):
        labels[:, j] = read_binary_column(label_file, image_list, len(images))
    tag_bits = read_binary_rows(tag_file, NUM_TAGS, image_list, len(images))
    return _SplitRows(images, labels, tag_bits, image_list, tag_file)


def _filter_split(rows: _SplitRows, drop_unlabeled: bool) -> None:
    """Mark repeated, untagged and (with ``drop_unlabeled``) unlabeled rows as dropped; count them."""
    keep = np.ones(len(rows.images), dtype=bool)
    first_row: dict[str, int] = {}
    repeated = [i for i, image in enumerate(rows.images) if first_row.setdefault(image, i) != i]
    repeats = DuplicateRows(rows.image_list)

    def content(i: int) -> tuple[bytes, bytes]:
        return rows.labels[i].tobytes(), rows.tag_bits[i].tobytes()

    for i in repeated:  # only repeated images reach DuplicateRows: 269k first rows would cost memory
        image = rows.images[i]
        first = first_row[image]
        repeats.is_new(image, content(first), first + 1)  # registers the first row (once)
        repeats.is_new(image, content(i), i + 1)
        keep[i] = False
    repeats.log(log)
    tagged = rows.tag_bits.any(axis=1)
    labelled = rows.labels.any(axis=1)
    untagged = keep & ~tagged
    keep &= tagged
    unlabeled = keep & ~labelled
    if drop_unlabeled:
        keep &= labelled
    rows.keep = keep
    rows.counts = {
        "listed": len(rows.images),
        "duplicate_images": repeats.dropped,
        "dropped_untagged": int(untagged.sum()),
        "dropped_unlabeled": int(unlabeled.sum()) if drop_unlabeled else 0,
        "unlabeled_kept": 0 if drop_unlabeled else int(unlabeled.sum()),
        "missing_images": 0,  # counted by _check_images
        "unreadable_images": 0,
    }


def _image_status(path: str) -> int:
    """0: readable; 1: missing; 2: present but unreadable."""
    if image_is_readable(Path(path)):
        return 0
    return 2 if os.path.isfile(path) else 1


def default_check_workers() -> int:
    """Processes for the image checks: this process's CPUs, at most 8."""
    return max(
        1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def check_image_files(paths: Sequence[str], workers: int | None = None) -> np.ndarray:
    """:func:`_image_status` of every path (int8), in ``workers`` processes for many paths."""
    workers = default_check_workers() if workers is None else workers
    if workers <= 1 or len(paths) < _PARALLEL_CHECK_MIN:
        return np.fromiter(map(_image_status, paths), dtype=np.int8, count=len(paths))
    # fork: the workers need nothing but this function (a fresh interpreter would import torch).
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        status = pool.map(_image_status, paths, chunksize=max(64, len(paths) // (16 * workers)))
        return np.fromiter(status, dtype=np.int8, count=len(paths))


def _check_images(split_rows: dict[str, _SplitRows], image_root: Path, workers: int | None) -> None:
    """Drop (and count, and log) the kept images that are missing or unreadable."""
    candidates = [np.flatnonzero(rows.keep) for rows in split_rows.values()]
    images = [rows.images[i] for rows, kept in zip(split_rows.values(), candidates) for i in kept]
    status = check_image_files([str(image_root / image) for image in images], workers)
    split_status = np.split(status, np.cumsum([len(kept) for kept in candidates])[:-1])
    for rows, kept, own in zip(split_rows.values(), candidates, split_status):
        rows.keep[kept[own != 0]] = False
        rows.counts["missing_images"] = int((own == 1).sum())
        rows.counts["unreadable_images"] = int((own == 2).sum())
    for code, what in ((1, "listed images missing"), (2, "unreadable images (damaged or not an image)")):
        bad = np.flatnonzero(status == code)
        if len(bad):
            log.warning(
                "NUS-WIDE: dropped %d %s under %s, e.g. %s",
                len(bad),
                what,
                image_root,
                ", ".join(images[i] for i in bad[:_MAX_EXAMPLES]),
            )


def source_files(root: Path, concepts: Sequence[str]) -> list[Path]:
    """The release files an index is built from (relative to ``root``)."""
    files = [CONCEPTS_FILE, TAGLIST_FILE]
    for split in SPLITS:
        image_list, tag_file, label_files = _split_files(Path(), split, concepts)
        files += [image_list, tag_file, *label_files]
    return files


def source_fingerprint(
    root: Path, concepts: Sequence[str], image_root: Path | None = None
) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}`` of the release files (``[-1, -1]``: missing) and, with
    ``image_root``, of its sub-folders (an image added or removed changes its folder's time)."""
    stamps = {rel.as_posix(): file_stamp(root / rel) or [-1, -1] for rel in source_files(root, concepts)}
    if image_root is not None and image_root.is_dir():
        stamps.update({f"<images>/{name}/": [0, mtime] for name, mtime in subfolder_times(image_root)})
    return stamps


def read_nuswide(
    root: str | Path,
    *,
    image_dir: str = "Flickr",
    check_images: bool = True,
    drop_unlabeled: bool = True,
    check_workers: int | None = None,
) -> NusWideIndex:
    """Read a NUS-WIDE release under ``root`` (images under ``root/image_dir``) into an index.

    Repeated, untagged and (with ``drop_unlabeled``) unlabeled images are dropped; with
    ``check_images`` so are images missing or unreadable on disk (checked in ``check_workers``
    processes; default: :func:`default_check_workers`), with a logged warning. Each drop is counted
    in ``stats``.
    """
    root = Path(root)
    image_root = root / image_dir
    concepts = read_concepts(root / CONCEPTS_FILE)
    # Stamped before reading: a file edited while it is read looks changed to the next check.
    sources = source_fingerprint(root, concepts, image_root if check_images else None)
    tags = read_tag_list(root / TAGLIST_FILE)
    if check_images and not image_root.is_dir():
        raise DatasetFormatError(image_root, "missing image folder; it should hold <dir>/<file>.jpg")
    split_rows = {split: _read_split(root, split, concepts) for split in SPLITS}
    for rows in split_rows.values():
        _filter_split(rows, drop_unlabeled)
    if check_images:
        _check_images(split_rows, image_root, check_workers)
    for rows in split_rows.values():
        rows.counts["kept"] = int(rows.keep.sum())
    stats = {
        key: {
            **{s: split_rows[s].counts[key] for s in SPLITS},
            "total": sum(r.counts[key] for r in split_rows.values()),
        }
        for key in _STAT_KEYS
    }
    log.info(
        "NUS-WIDE %s: dropped %d images without tags and %d without labels",
        root,
        stats["dropped_untagged"]["total"],
        stats["dropped_unlabeled"]["total"],
    )
    for split, rows in split_rows.items():
        dropped = {
            "repeated images": rows.counts["duplicate_images"],
            "images without tags": rows.counts["dropped_untagged"],
            "images without labels": rows.counts["dropped_unlabeled"],
            "images missing on disk": rows.counts["missing_images"],
            "unreadable images": rows.counts["unreadable_images"],
        }
        require_rows(np.flatnonzero(rows.keep), split, rows.image_list, rows.tag_file, dropped=dropped)

    kept = [np.flatnonzero(split_rows[s].keep) for s in SPLITS]
    images = [split_rows[s].images[i] for s, rows in zip(SPLITS, kept) for i in rows]
    encoded = [image.encode("utf-8") for image in images]
    return NusWideIndex(
        concepts=concepts,
        tags=tags,
        paths=np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(),
        path_offsets=np.cumsum([0, *map(len, encoded)], dtype=np.int64),
        split_codes=np.concatenate(
            [np.full(len(rows), code, dtype=np.uint8) for code, rows in enumerate(kept)]
        ),
        label_bits=np.packbits(
            np.concatenate([split_rows[s].labels[rows] for s, rows in zip(SPLITS, kept)]), axis=1
        ),
        tag_bits=np.concatenate([split_rows[s].tag_bits[rows] for s, rows in zip(SPLITS, kept)]),
        image_hash=path_hashes(images),
        stats=stats,
        image_root=str(image_root.resolve()),
        sources=sources,
        settings=index_settings(image_root, check_images, drop_unlabeled),
    )


def index_settings(image_root: Path, check_images: bool, drop_unlabeled: bool) -> dict[str, Any]:
    """What an index depends on besides the release files."""
    return {
        "image_root": str(Path(image_root).resolve()),
        "check_images": bool(check_images),
        "drop_unlabeled": bool(drop_unlabeled),
    }


# --------------------------------------------------------------------------------------------
# Compact index
# --------------------------------------------------------------------------------------------


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def write_index(index: NusWideIndex, out_path: str | Path) -> Path:
    """Write ``index`` to ``out_path`` (atomically): a JSON header line, then the arrays."""
    out_path = Path(out_path)
    layout: dict[str, dict[str, Any]] = {}
    size = 0
    for name in _ARRAYS:
        array = np.ascontiguousarray(getattr(index, name))
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": size}
        size = _aligned(size + array.nbytes)
    header = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        **{name: getattr(index, name) for name in _HEADER_FIELDS},
        "arrays": layout,
        "payload_bytes": size,
    }
    head = (json.dumps(header, separators=(",", ":")) + "\n").encode("utf-8")
    start = _aligned(len(head))
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        f.write(head)
        for name in _ARRAYS:
            f.seek(start + layout[name]["offset"])
            f.write(memoryview(np.ascontiguousarray(getattr(index, name))).cast("B"))
        f.truncate(start + size)
    return out_path


def build_index(root: str | Path, out_path: str | Path, **read_kwargs: Any) -> Path:
    """Read the release under ``root`` (see :func:`read_nuswide`) and write its index to ``out_path``."""
    return write_index(read_nuswide(root, **read_kwargs), out_path)


def read_index_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The JSON header of an index file and where its arrays start, without reading the arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        first = f.readline()
    if not first.strip():
        raise DatasetFormatError(path, "empty index file; expected a JSON header line", line=1)
    return read_json_header(path), _aligned(len(first))


def _mapped(path: Path, start: int, end: int, spec: Any, name: str) -> np.ndarray:
    """Map array ``name`` (its header entry ``spec``) from the bytes ``[start, end)`` of ``path``."""
    where = f"arrays.{name}"
    if not isinstance(spec, dict):
        raise DatasetFormatError(path, "missing or malformed array entry", line=1, field=where)
    try:
        dtype = np.dtype(json_field(spec, "dtype", str, path, 1, f"{where}: "))
        shape = tuple(int(n) for n in json_field(spec, "shape", list, path, 1, f"{where}: "))
    except (TypeError, ValueError) as err:
        raise DatasetFormatError(path, f"bad dtype or shape ({err})", line=1, field=where) from None
    offset = json_field(spec, "offset", int, path, 1, f"{where}: ")
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if offset < 0 or min(shape, default=0) < 0 or start + offset + nbytes > end:
        raise DatasetFormatError(path, "array lies outside the file's payload", line=1, field=where)
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=start + offset, shape=shape)


def load_index(path: str | Path) -> NusWideIndex:
    """Map an index written by :func:`write_index`, validating its header and array shapes."""
    path = Path(path)
    header, start = read_index_header(path)
    if header.get("format") != INDEX_FORMAT or header.get("version") != INDEX_VERSION:
        raise DatasetFormatError(
            path, f"not a {INDEX_FORMAT} version {INDEX_VERSION} header", line=1, field="format"
        )
    payload = json_field(header, "payload_bytes", int, path, 1)
    size = path.stat().st_size
    if size < start + payload:
        raise DatasetFormatError(
            path, f"the header describes {start + payload} bytes but the file holds {size}; truncated?"
        )
    arrays = json_field(header, "arrays", dict, path, 1)
    index = NusWideIndex(
        path=path,
        **{name: json_field(header, name, kind, path, 1) for name, kind in _HEADER_FIELDS.items()},
        **{name: _mapped(path, start, start + payload, arrays.get(name), name) for name in _ARRAYS},
    )
    _check_shapes(index, path)
    return index


def _check_shapes(index: NusWideIndex, path: Path) -> None:
    n = len(index.split_codes)
    expected = {
        "path_offsets": (n + 1,),
        "label_bits": (n, (len(index.concepts) + 7) // 8),
        "tag_bits": (n, (len(index.tags) + 7) // 8),
        "image_hash": (n,),
    }
    for name, shape in expected.items():
        if getattr(index, name).shape != shape:
            raise DatasetFormatError(
                path, f"shape {getattr(index, name).shape}, expected {shape}", line=1, field=f"arrays.{name}"
            )
    offsets = np.asarray(index.path_offsets)
    if n and (offsets[0] != 0 or offsets[-1] != len(index.paths) or (np.diff(offsets) <= 0).any()):
        raise DatasetFormatError(
            path, "image path offsets are not increasing", line=1, field="arrays.path_offsets"
        )
    if n and np.asarray(index.split_codes).max() >= len(SPLITS):
        raise DatasetFormatError(
            path, "split codes must be 0 (train) or 1 (test)", line=1, field="arrays.split_codes"
        )
    kept = index.stats.get("kept")
    total = kept.get("total") if isinstance(kept, dict) else None
    if total is not None and total != n:
        raise DatasetFormatError(path, f"header says {total} images but the arrays hold {n}; truncated?")


# ============================================================================================
# LightningDataModule
# ============================================================================================


class NusWideDataset(Dataset):
    """Samples ``{"image": [3, H, W], "tags": [N], "labels": [C], "index": i}`` of some index rows.

    Tags and labels stay bit-packed in the (memory-mapped) index until an item is read. With
    ``cache_decoded`` decoded images are kept in memory (see :class:`~datamodules.base.DecodedImages`).
    """

    def __init__(
        self,
        index: NusWideIndex,
        rows: np.ndarray,
        transform: Callable | None = None,
        cache_decoded: bool | float = False,
    ) -> None:
        self.index = index
        self.rows = np.asarray(rows, dtype=np.int64)
        self.image_root = Path(index.image_root)
        self.transform = transform
        self.images = DecodedImages(cache_decoded)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = int(self.rows[i])
        image = self.images.load(i, self.image_root / self.index.image(row))
        if self.transform is not None:
            image = self.transform(image)
        # Tensors that own their memory: views of numpy buffers (torch.from_numpy) left ~120 MB of
        # heap in each loader worker after a pass over the full-size training split (measured).
        return {
            "image": image,
            "tags": torch.tensor(self.index.tag_vector(row)),
            "labels": torch.tensor(self.index.label_vector(row)),
            "index": i,
        }


class NusWideDataModule(SuiteDataModule):
    """NUS-WIDE (real release or its synthetic twin) for the multi-label tagger.

    ``prepare`` (once per node) builds the index when it is missing or stale (a source file's size
    or modification time, or a setting, differs from what the index recorded); ``setup`` maps it,
    keeps the official test split and carves the validation part out of the official train split
    by a hash of each image path (:func:`validation_mask`).

    Args:
        root: the release folder (``ConceptsList/``, ``Groundtruth/``, ``NUS_WID_Tags/``, ``ImageList/``).
        image_dir: folder of the images, relative to ``root`` (or absolute).
        index_path: where the index lives (default ``<root>/nuswide_index.bin``).
        check_images: drop (and count) images missing or unreadable on disk when building the index.
        check_workers: processes for those checks (``None``: this machine's CPUs, at most 8).
        drop_unlabeled: drop (and count) images without any concept label (the seed's protocol);
            ``False`` keeps them.
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        val_fraction: expected share of the official train split used for validation.
        cache_decoded: keep decoded images in memory (see :class:`~datamodules.base.DecodedImages`).
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
        check_workers: int | None = None,
        drop_unlabeled: bool = True,
        transforms: ImageTransforms | None = None,
        val_fraction: float = 0.1,
        cache_decoded: bool | float = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.index_path = Path(index_path) if index_path else self.root / INDEX_FILENAME
        self.transforms = transforms or ImageTransforms()
        self.index: NusWideIndex | None = None

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        reason = self.stale_reason()
        if reason is not None:
            log.info("building the NUS-WIDE index %s from %s (%s)", self.index_path, self.root, reason)
            build_index(
                self.root,
                self.index_path,
                image_dir=self.hparams.image_dir,
                check_images=self.hparams.check_images,
                drop_unlabeled=self.hparams.drop_unlabeled,
                check_workers=self.hparams.check_workers,
            )

    def _image_root(self) -> Path:
        return self.root / self.hparams.image_dir

    def stale_reason(self) -> str | None:
        """Why the index at ``index_path`` must be (re)built, or ``None`` when it is current. A file
        there that is not an index raises (it is never overwritten)."""
        if not self.index_path.is_file():
            return "no index yet"
        header, _ = read_index_header(self.index_path)  # a broken one raises, naming the file and line 1
        if header.get("format") != INDEX_FORMAT:
            raise DatasetFormatError(
                self.index_path,
                f"not a {INDEX_FORMAT} file; delete it or point data.index_path elsewhere",
                line=1,
                field="format",
            )
        if header.get("version") != INDEX_VERSION:
            return f"index version {header.get('version')}, this reader writes {INDEX_VERSION}"
        settings = index_settings(self._image_root(), self.hparams.check_images, self.hparams.drop_unlabeled)
        if header.get("settings") != settings:
            return f"built with {header.get('settings')}, now {settings}"
        concepts = header.get("concepts")
        if not isinstance(concepts, list):
            return "no concept list in the header"
        image_root = self._image_root() if self.hparams.check_images else None
        now, then = source_fingerprint(self.root, concepts, image_root), header.get("sources") or {}
        changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            return "changed since it was built: " + ", ".join(changed[:3]) + more
        return None

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        reason = self.stale_reason()
        if reason is not None:  # setup never builds: that is prepare_data's job, once per node
            raise DatasetFormatError(
                self.index_path, f"the index is not current ({reason}); run prepare_data() first"
            )
        self.index = load_index(self.index_path)
        train, test = self.index.rows("train"), self.index.rows("test")
        for split, rows in (("train", train), ("test", test)):
            require_rows(rows, split, self.index_path)
        in_val = validation_mask(
            self.index.image_hash[train], self.hparams.val_fraction, self.hparams.split_seed
        )
        cache = self.hparams.cache_decoded
        self.data_train = NusWideDataset(self.index, train[~in_val], self.transforms.train(), cache)
        self.data_val = NusWideDataset(self.index, train[in_val], self.transforms.eval(), cache)
        self.data_test = NusWideDataset(self.index, test, self.transforms.eval(), cache)
        if not len(self.data_val):
            raise ValueError(
                f"data.val_fraction={self.hparams.val_fraction} leaves no validation image among the "
                f"{len(train)} training images; raise it"
            )
        log.info(
            "NUS-WIDE: %d train / %d val / %d test images (%s)",
            len(self.data_train),
            len(self.data_val),
            len(self.data_test),
            ", ".join(f"{k}={v['total']}" for k, v in self.index.stats.items()),
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
