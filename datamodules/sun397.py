"""SUN397 reader, its on-disk index and the hashtag DataModule (seed 002).

Reads a SUN397 release (the real one or the synthetic twins of :mod:`datamodules.synthetic.sun397`)
laid out as published::

    SUN397/<letter>/<class>[/<subclass>]/sun_<16 letters>.jpg   images (SUN397.tar.gz)
    Partitions/ClassName.txt                                    397 lines "/a/abbey", "/a/atrium/public" ...
    Partitions/Training_NN.txt, Partitions/Testing_NN.txt       NN = 01..10; "/a/abbey/sun_....jpg" per line

**The index** (:func:`build_index`, once per node in ``prepare``): every image on disk (class
folders listed, every file checked once with :func:`~datamodules.base.image_is_readable`), its
class, whether each partition lists it for training or testing, and the drop counts, stored as
compact numpy arrays in one ``.npz`` file (108,754 paths: ~7 MB). Every rank loads it in
``setup`` (:func:`load_index`) instead of opening 108k files again. The index records the
settings it was built with and a fingerprint of the release (size and modification time of the
class list and partition files, modification time of every class folder: adding, removing or
renaming an image changes its folder's), and is rebuilt when they change. Not noticed: an image
rewritten in place under the same name (delete the index to recheck).

**Splits** (:func:`split_index`): ``partition`` (the official partition ``N``: its training and
testing lists) or ``random`` (the seed's: every image on disk, 80/20). In both, a validation part
is carved from the training part. Membership is a stable function of the image's path (a keyed
BLAKE2b hash with ``split_seed`` in the key, as a number in [0, 1)), never of the order or count of
the surviving images: an image is in validation when its number is below ``val_fraction``, so
dropping or adding one image never moves another between training and validation; the random test
split takes the ``round(test_fraction * N)`` images with the smallest numbers (exactly the seed's
80/20; one image more or less moves at most one image at the boundary).

Every format problem raises :class:`~datamodules.errors.DatasetFormatError` with the file and
the line. A class-list entry without images, partition entries missing on disk and unreadable
images are dropped, counted in ``stats`` and logged, never silently; a split left empty is an
error. The image check is cheap (headers and a JPEG's end marker); damage inside a complete file is
reported when the image is decoded, naming the file.

Labels are hashtags: each scene class maps to a hashtag or ``other`` through a class -> hashtag
table (:class:`HashtagMapping`, chosen with ``hashtags=author|rules|seed_table2``: see
``conf/hashtags``); the model predicts hashtags directly and the mapping stays here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule, image_is_readable
from datamodules.errors import DatasetFormatError, read_text, require_rows
from datamodules.index_state import file_stamp, load_npz, npz_meta, save_npz
from datamodules.preprocessing.images import ImageTransforms

log = logging.getLogger(__name__)

OTHER = "other"
NUM_PARTITIONS = 10
CLASS_RE = re.compile(r"^/([a-z])/([a-z0-9_]+)(/[a-z0-9_]+)?$")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
INDEX_FORMAT = "sun397-index"
INDEX_VERSION = 1
INDEX_FILE = "sun397_index.npz"
_ARRAYS = ("paths", "labels", "readable", "training", "testing")
_MAX_EXAMPLES = 5
#: The two lists of a partition: split -> the start of their file name (``Training_03.txt``).
PARTITION_LISTS = {"train": "Training", "test": "Testing"}


def partition_file(partitions_dir: str, split: str, n: int) -> str:
    """The file (relative to the release root) listing the ``split`` images of partition ``n``."""
    return f"{partitions_dir}/{PARTITION_LISTS[split]}_{n:02d}.txt"


def _lines(path: Path) -> list[str]:
    """Lines of an ASCII text file (LF or CRLF, final newline optional); a missing file is an error."""
    if not path.is_file():
        raise DatasetFormatError(path, "file not found")
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DatasetFormatError(path, f"non-ASCII byte {raw[err.start]:#x}", line=line) from err
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln.removesuffix("\r") for ln in lines]


def _remember_line(seen: dict[str, int], key: str, line: int, path: Path, what: str, **where: str) -> None:
    """Note the first line of ``key``; a repeat raises, naming that line."""
    if key in seen:
        raise DatasetFormatError(path, f"{what} repeats line {seen[key]}", line=line, **where)
    seen[key] = line


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
        _remember_line(seen, name, i, path, f"class {name!r}")
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
        _remember_line(seen, entry, i, path, entry)
        out.append((entry.lstrip("/"), classes[class_path]))
    return out


def scan_images(image_root: Path, classes: Sequence[str]) -> tuple[list[str], list[int], list[str]]:
    """Every image on disk by class (files directly in the class folder, sorted by name): their paths
    relative to ``image_root``, their class indices, and the classes with no image."""
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for c, name in enumerate(classes):
        rel = name.lstrip("/")
        try:
            with os.scandir(image_root / rel) as entries:
                files = sorted(
                    e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file()
                )
        except (FileNotFoundError, NotADirectoryError):
            files = []
        if not files:
            empty.append(name)
        paths += [f"{rel}/{f}" for f in files]
        labels += [c] * len(files)
    return paths, labels, empty


def check_images(image_root: Path, paths: Sequence[str], threads: int = 8) -> np.ndarray:
    """:func:`~datamodules.base.image_is_readable` of every path, as a bool array. Threads overlap the
    file reads (on network storage the latency, not the CPU, is the cost)."""
    chunks = [paths[i : i + 2048] for i in range(0, len(paths), 2048)]

    def check(chunk: Sequence[str]) -> list[bool]:
        return [image_is_readable(image_root / p) for p in chunk]

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(check, chunks))
    return np.fromiter((ok for chunk in results for ok in chunk), dtype=bool, count=len(paths))


# ============================================================================================
# The index: built once (prepare), loaded by every rank (setup)
# ============================================================================================


@dataclass
class ReleaseIndex:
    """Every image of a release on disk, as compact arrays (see module doc).

    Attributes:
        classes: class paths of the class list, in file order.
        paths: ``[N]`` bytes: image paths relative to ``image_root`` (``a/abbey/sun_....jpg``).
        labels: ``[N]`` class index of each image.
        readable: ``[N]`` False for images the check found unreadable (all True when unchecked).
        training, testing: ``[N]`` bit ``n - 1`` set when ``Training_NN`` / ``Testing_NN`` lists the image.
        partitions: the partitions whose two files exist.
        stats: counts (images on disk, unreadable, classes without images, partition entries
            missing on disk per partition) and a few examples of each.
        settings: what the index was built from (see :func:`index_settings`).
    """

    classes: list[str]
    image_root: Path
    paths: np.ndarray
    labels: np.ndarray
    readable: np.ndarray
    training: np.ndarray
    testing: np.ndarray
    partitions: list[int]
    stats: dict[str, Any]
    settings: dict[str, Any]


def index_settings(
    root: Path, image_dir: str, class_list: str, partitions_dir: str, check: bool
) -> dict[str, Any]:
    """What an index is valid for: the options, the class list and partition files (size, mtime) and a
    digest of the class folders' modification times. A few hundred ``stat`` calls, no image opened."""
    root = Path(root)
    lists = [
        partition_file(partitions_dir, s, n) for n in range(1, NUM_PARTITIONS + 1) for s in PARTITION_LISTS
    ]
    files = {name: file_stamp(root / name) for name in [class_list, *lists]}
    digest = hashlib.blake2b(digest_size=16)
    try:
        classes = read_class_names(root / class_list)
    except DatasetFormatError:
        classes = []  # the build reports the problem
    for name in classes:
        digest.update(f"{name}:{file_stamp(root / image_dir / name.lstrip('/'))}\n".encode())
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "root": str(root.resolve()),
        "image_dir": image_dir,
        "class_list": class_list,
        "partitions_dir": partitions_dir,
        "check_images": bool(check),
        "files": files,
        "folders": digest.hexdigest(),
    }


def build_index(
    root: str | Path,
    *,
    image_dir: str = "SUN397",
    class_list: str = "Partitions/ClassName.txt",
    partitions_dir: str = "Partitions",
    check: bool = True,
    threads: int = 8,
) -> ReleaseIndex:
    """Scan and check a release (see module doc); nothing is written."""
    root = Path(root)
    image_root = root / image_dir
    if not image_root.is_dir():
        raise DatasetFormatError(image_root, "image folder not found (expected SUN397/<letter>/<class>/...)")
    settings = index_settings(root, image_dir, class_list, partitions_dir, check)
    classes = read_class_names(root / class_list)
    class_index = {c: i for i, c in enumerate(classes)}
    paths, labels, empty = scan_images(image_root, classes)
    stats: dict[str, Any] = {
        "classes": len(classes),
        "classes_without_images": len(empty),
        "images_on_disk": len(paths),
    }
    if empty:
        stats["classes_without_images_examples"] = empty[:_MAX_EXAMPLES]
        log.warning(
            "SUN397: %d class(es) of %s have no images: %s",
            len(empty),
            root / class_list,
            ", ".join(empty[:_MAX_EXAMPLES]),
        )
    readable = check_images(image_root, paths, threads) if check else np.ones(len(paths), dtype=bool)
    stats["unreadable"] = int((~readable).sum())
    if stats["unreadable"]:
        bad = [paths[i] for i in np.flatnonzero(~readable)[:_MAX_EXAMPLES]]
        stats["unreadable_examples"] = bad
        log.warning("SUN397: %d unreadable image(s) on disk, e.g. %s", stats["unreadable"], ", ".join(bad))
    position = {p: i for i, p in enumerate(paths)}
    bits = {split: np.zeros(len(paths), dtype=np.uint16) for split in PARTITION_LISTS}
    partitions, missing = [], {}
    for n in range(1, NUM_PARTITIONS + 1):
        files = {split: root / partition_file(partitions_dir, split, n) for split in PARTITION_LISTS}
        if not all(f.is_file() for f in files.values()):
            continue
        partitions.append(n)
        for split, path in files.items():
            listed = read_partition(path, class_index)
            found = np.fromiter((position.get(p, -1) for p, _ in listed), dtype=np.int64, count=len(listed))
            bits[split][found[found >= 0]] |= np.uint16(1 << (n - 1))
            lost = [listed[i][0] for i in np.flatnonzero(found < 0)[:_MAX_EXAMPLES]]
            missing[f"{split}_{n:02d}"] = {"count": int((found < 0).sum()), "examples": lost}
    stats["missing"] = missing
    return ReleaseIndex(
        classes=classes,
        image_root=image_root,
        paths=np.array(paths, dtype=bytes) if paths else np.zeros(0, dtype="S1"),
        labels=np.asarray(labels, dtype=np.int16),
        readable=readable,
        training=bits["train"],
        testing=bits["test"],
        partitions=partitions,
        stats=stats,
        settings=settings,
    )


def save_index(index: ReleaseIndex, path: str | Path) -> Path:
    """Write the index as one ``.npz`` (atomically: a kill leaves the previous file or none)."""
    meta = {
        "settings": index.settings,
        "classes": index.classes,
        "image_root": str(index.image_root),
        "partitions": index.partitions,
        "stats": index.stats,
    }
    return save_npz(path, meta, {name: getattr(index, name) for name in _ARRAYS})


def load_index(path: str | Path) -> ReleaseIndex:
    """Read an index written by :func:`save_index` (no pickle)."""
    path = Path(path)
    try:
        meta, arrays = load_npz(path, _ARRAYS)
    except (OSError, ValueError, KeyError) as err:
        raise DatasetFormatError(path, f"cannot read the SUN397 index ({err}); delete it to rebuild") from err
    if meta.get("settings", {}).get("format") != INDEX_FORMAT:
        raise DatasetFormatError(path, f"not a {INDEX_FORMAT} file")
    return ReleaseIndex(
        classes=list(meta["classes"]),
        image_root=Path(meta["image_root"]),
        partitions=list(meta["partitions"]),
        stats=meta["stats"],
        settings=meta["settings"],
        **arrays,
    )


def index_is_current(path: Path, settings: Mapping[str, Any]) -> bool:
    """True when the index at ``path`` was built from these settings (an index with image checks also
    serves a request without them)."""
    built = (npz_meta(path) or {}).get("settings")
    if not isinstance(built, dict):
        return False
    return built == {**settings, "check_images": settings["check_images"] or bool(built.get("check_images"))}


# ============================================================================================
# Splits
# ============================================================================================


def path_numbers(paths: np.ndarray, key: str) -> np.ndarray:
    """A number in [0, 1) per path, a function of the path and ``key`` only: the first 8 bytes of the
    keyed BLAKE2b digest of the path, over 2**64. Stable across runs, platforms and Python versions."""
    k = key.encode()
    ints = np.fromiter(
        (int.from_bytes(hashlib.blake2b(p, digest_size=8, key=k).digest(), "big") for p in paths),
        dtype=np.uint64,
        count=len(paths),
    )
    return ints.astype(np.float64) / 2.0**64


@dataclass
class Split:
    """Positions (into the index arrays) of each split's usable images, and the drop counts."""

    positions: dict[str, np.ndarray]
    stats: dict[str, Any]


def split_index(
    index: ReleaseIndex,
    *,
    split: str = "partition",
    partition: int = 1,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    split_seed: int = 0,
    root: Path | None = None,
    partitions_dir: str = "Partitions",
    class_list: str = "Partitions/ClassName.txt",
) -> Split:
    """Train / test (/ val when ``val_fraction > 0``) positions of an index (see module doc)."""
    root = Path(root) if root is not None else index.image_root.parent
    n = len(index.paths)
    stats: dict[str, Any] = {
        key: index.stats[key] for key in ("classes", "classes_without_images", "images_on_disk")
    }
    sources = {"train": index.image_root, "test": index.image_root}  # random split: the images on disk
    if split == "partition":
        if not 1 <= partition <= NUM_PARTITIONS:
            raise ValueError(f"partition must be in 1..{NUM_PARTITIONS}, got {partition}")
        if partition not in index.partitions:
            raise DatasetFormatError(
                root / partition_file(partitions_dir, "train", partition),
                f"partition {partition} not found (its Training and Testing files)",
            )
        bit = np.uint16(1 << (partition - 1))
        members = {"train": (index.training & bit) != 0, "test": (index.testing & bit) != 0}
        for name in PARTITION_LISTS:
            sources[name] = root / partition_file(partitions_dir, name, partition)
            lost = index.stats["missing"][f"{name}_{partition:02d}"]
            stats[f"missing_{name}"] = lost["count"]
            if lost["count"]:
                log.warning(
                    "SUN397: %d image(s) of %s are not on disk (dropped), e.g. %s",
                    lost["count"],
                    sources[name].name,
                    ", ".join(lost["examples"]),
                )
        overlap = np.flatnonzero(members["train"] & members["test"])
        if len(overlap):
            example = index.paths[overlap[0]].decode()
            raise DatasetFormatError(
                sources["test"], f"{len(overlap)} images are also in the training list, e.g. {example}"
            )
    elif split == "random":
        numbers = path_numbers(index.paths, f"sun397-test-{split_seed}")
        order = np.lexsort((index.paths, numbers))  # ties (never seen) broken by the path
        test = np.zeros(n, dtype=bool)
        test[order[: int(round(test_fraction * n))]] = True
        members = {"train": ~test, "test": test}
    else:
        raise ValueError(f"split must be 'partition' or 'random', got {split!r}")
    checked = index.settings.get("check_images", False)
    positions: dict[str, np.ndarray] = {}
    for name in ("train", "test"):
        chosen = members[name]
        bad = np.flatnonzero(chosen & ~index.readable)
        if checked:
            stats[f"unreadable_{name}"] = len(bad)
        if len(bad):
            log.warning(
                "SUN397: %d unreadable image(s) dropped from %s: %s",
                len(bad),
                name,
                ", ".join(index.paths[i].decode() for i in bad[:_MAX_EXAMPLES]),
            )
        positions[name] = np.flatnonzero(chosen & index.readable)
        stats[f"kept_{name}"] = len(positions[name])
    for name in ("train", "test"):
        require_rows(
            positions[name],
            name,
            sources[name],
            root / class_list,
            dropped={
                "not on disk": stats.get(f"missing_{name}", 0),
                "unreadable": stats.get(f"unreadable_{name}", 0),
            },
        )
    if val_fraction > 0:
        train = positions["train"]
        numbers = path_numbers(index.paths[train], f"sun397-val-{split_seed}")
        in_val = numbers < val_fraction
        if not in_val.any():  # a tiny split: the one image nearest the threshold, still path-determined
            in_val[int(np.argmin(numbers))] = True
        positions["val"], positions["train"] = train[in_val], train[~in_val]
        stats["kept_val"], stats["kept_train"] = int(in_val.sum()), int((~in_val).sum())
    return Split(positions=positions, stats=stats)


@dataclass
class Sun397Index:
    """Usable images of a release: ``records`` per split name, class list, and the drop counts."""

    classes: list[str]
    image_root: Path
    records: dict[str, list[tuple[str, int]]]
    stats: dict[str, Any] = field(default_factory=dict)


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
    """Read a release into train/test records in one call (see module doc): :func:`build_index` then
    :func:`split_index`, as lists. ``check_images`` opens every image once and drops (and counts)
    the unreadable ones."""
    root = Path(root)
    index = build_index(
        root, image_dir=image_dir, class_list=class_list, partitions_dir=partitions_dir, check=check_images
    )
    chosen = split_index(
        index,
        split=split,
        partition=partition,
        test_fraction=test_fraction,
        split_seed=split_seed,
        root=root,
        partitions_dir=partitions_dir,
        class_list=class_list,
    )
    records = {
        name: [(index.paths[i].decode(), int(index.labels[i])) for i in pos]
        for name, pos in chosen.positions.items()
    }
    return Sun397Index(
        classes=index.classes, image_root=index.image_root, records=records, stats=chosen.stats
    )


# ============================================================================================
# Hashtag mapping
# ============================================================================================


def read_hashtag_vocabulary(rules_file: str | Path) -> list[str]:
    """The hashtags of a WordNet rules file (``conf/hashtags/wordnet/rules.yaml``), then ``other``."""
    tags = [str(t) for t in (yaml.safe_load(Path(rules_file).read_text()) or {}).get("hashtags", [])]
    return [t for t in tags if t != OTHER] + [OTHER]


def read_hashtag_mapping(
    path: str | Path, class_column: str = "class", hashtag_column: str = "hashtag"
) -> dict[str, str]:
    """``{class path: hashtag}`` of a mapping CSV with a header naming ``class_column`` and
    ``hashtag_column`` (an empty hashtag is ``other``). UTF-8, LF or CRLF, last line ending optional."""
    path = Path(path)
    reader = csv.reader(
        io.StringIO(read_text(path, "a SUN397 class -> hashtag CSV (conf/hashtags)"), newline="")
    )
    header = next(reader, [])
    if class_column not in header or hashtag_column not in header:
        raise DatasetFormatError(
            path, f"expected a header with {class_column!r} and {hashtag_column!r} columns", line=1
        )
    c, h = header.index(class_column), header.index(hashtag_column)
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        if len(row) != len(header):
            raise DatasetFormatError(
                path, f"expected {len(header)} fields, got {len(row)}", line=reader.line_num
            )
        _remember_line(first_line, row[c], reader.line_num, path, f"class {row[c]!r}", field=class_column)
        out[row[c]] = row[h] or OTHER
    return out


@dataclass(frozen=True)
class HashtagMapping:
    """A SUN397 class -> hashtag table, as a ``conf/hashtags`` option describes it.

    Args:
        mapping_file: the CSV.
        class_column, hashtag_column: its columns (an empty hashtag is ``other``).
        corrections: ``{class: hashtag}`` applied over the file (``seed_table2``: the seed's Table 2).
        vocabulary: the model's hashtags in order (``other`` appended); ``None``: every hashtag the
            table uses, sorted.
        source: where the table comes from (repository, path, commit; recorded with exported models).
    """

    mapping_file: str
    class_column: str = "class"
    hashtag_column: str = "hashtag"
    corrections: Mapping[str, str] = field(default_factory=dict)
    vocabulary: Sequence[str] | None = None
    source: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> tuple[list[str], dict[str, str]]:
        """``(vocabulary with other last, {class: hashtag})``."""
        mapping = read_hashtag_mapping(self.mapping_file, self.class_column, self.hashtag_column)
        unknown = sorted(set(self.corrections) - set(mapping))
        if unknown:
            raise DatasetFormatError(
                self.mapping_file,
                f"corrections name classes the table does not have: {unknown}",
                field="class",
            )
        mapping.update({c: (t or OTHER) for c, t in self.corrections.items()})
        tags = self.vocabulary if self.vocabulary is not None else sorted(set(mapping.values()))
        return [str(t) for t in tags if t != OTHER] + [OTHER], mapping


def class_targets(
    classes: Sequence[str],
    mapping: dict[str, str],
    hashtags: Sequence[str],
    mapping_file: str | Path = "hashtag mapping",
) -> list[int]:
    """Hashtag index of every class.

    Every class must have a row in the mapping (``mapping_file``, for the message): a missing one is an
    error rather than a silent ``other``, since the shipped mappings cover all 397 classes, so a gap
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
            mapping_file, f"hashtags outside the model's vocabulary: {unknown}", field="hashtag"
        )
    return [pos[mapping[c]] for c in classes]


# ============================================================================================
# LightningDataModule
# ============================================================================================


class Sun397Dataset(Dataset):
    """``{"image": [3, H, W], "label": hashtag index, "scene": class index, "index": i}``.

    Holds numpy arrays only (paths as bytes, class indices, each class's hashtag), so DataLoader
    workers share them with the main process instead of copying a Python object per image.
    ``cache_decoded`` keeps decoded pixels in memory (see :class:`~datamodules.base.DecodedImages`).
    """

    def __init__(
        self,
        image_root: Path,
        paths: np.ndarray,
        scenes: np.ndarray,
        targets: Sequence[int],
        transform: Callable | None = None,
        cache_decoded: bool | float = False,
    ) -> None:
        self.image_root = Path(image_root)
        self.paths = paths
        self.scenes = scenes
        self.targets = np.asarray(targets, dtype=np.int64)
        self.transform = transform
        self.images = DecodedImages(cache_decoded)

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.image_root / self.paths[i].decode()

    @property
    def records(self) -> list[tuple[str, int]]:
        """``(path relative to image_root, scene class)`` per image, as Python objects (for tools that
        list the files; the loaders never build it)."""
        return [(p.decode(), int(s)) for p, s in zip(self.paths, self.scenes)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images.load(i, self.path(i))
        if self.transform is not None:
            image = self.transform(image)
        scene = int(self.scenes[i])
        return {"image": image, "label": int(self.targets[scene]), "scene": scene, "index": i}


class Sun397DataModule(SuiteDataModule):
    """SUN397 (real or a synthetic twin) with hashtag labels, for the hashtag scene classifier.

    ``prepare`` (once per node) builds the index of the release (every image listed and checked
    once) unless a current one is on disk; ``setup`` (every rank) loads it and splits it.

    Args:
        root: folder with ``SUN397/`` (images) and ``Partitions/`` (class list, partition files).
        hashtags: the class -> hashtag table, the keyword arguments of :class:`HashtagMapping`
            (``conf/hashtags/<option>.yaml``, chosen with ``hashtags=author|rules|seed_table2``).
        split: ``partition`` (official partition ``partition``) or ``random`` (``1 - test_fraction`` /
            ``test_fraction``, by a hash of each path).
        val_fraction: share of the training part used for validation (by a hash of each path).
        check_images: open every image once when the index is built and drop unreadable ones (counted).
        index_path: where the index lives (default ``<root>/sun397_index.npz``; set it when ``root``
            is read-only).
        check_threads: threads that check the images when the index is built.
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms` (its ``k`` also drives TTA).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`datamodules.synthetic.sun397.ensure_sun397`).
    """

    synthetic_writer = "datamodules.synthetic.sun397.ensure_sun397"

    def __init__(
        self,
        root: str,
        hashtags: Mapping[str, Any],
        split: str = "random",
        partition: int = 1,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        image_dir: str = "SUN397",
        class_list: str = "Partitions/ClassName.txt",
        partitions_dir: str = "Partitions",
        check_images: bool = True,
        index_path: str | None = None,
        check_threads: int = 8,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool | float = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.transforms = transforms or ImageTransforms()
        self.mapping_spec = HashtagMapping(**hashtags)
        self.index_path = Path(index_path) if index_path else self.root / INDEX_FILE
        self.hashtags: list[str] = []
        self.mapping: dict[str, str] = {}
        self.index: ReleaseIndex | None = None
        self.split: Split | None = None

    def _settings(self) -> dict[str, Any]:
        hp = self.hparams
        return index_settings(self.root, hp.image_dir, hp.class_list, hp.partitions_dir, hp.check_images)

    def prepare(self) -> None:
        if index_is_current(self.index_path, self._settings()):
            return
        hp = self.hparams
        log.info(
            "SUN397: building the index %s of %s (every image is checked once)", self.index_path, self.root
        )
        index = build_index(
            self.root,
            image_dir=hp.image_dir,
            class_list=hp.class_list,
            partitions_dir=hp.partitions_dir,
            check=hp.check_images,
            threads=hp.check_threads,
        )
        save_index(index, self.index_path)

    def setup(self, stage: str | None = None) -> None:
        if self.index is not None:
            return
        hp = self.hparams
        self.hashtags, self.mapping = self.mapping_spec.load()
        if not index_is_current(self.index_path, self._settings()):
            raise DatasetFormatError(
                self.index_path,
                f"no index of {self.root} with these settings, or the release changed since it was built; "
                "run prepare_data() first (the trainer and experiments.train do)",
            )
        self.index = index = load_index(self.index_path)
        options = {k: hp[k] for k in ("split", "partition", "test_fraction", "val_fraction", "split_seed")}
        self.split = split = split_index(
            index, root=self.root, partitions_dir=hp.partitions_dir, class_list=hp.class_list, **options
        )
        targets = class_targets(index.classes, self.mapping, self.hashtags, self.mapping_spec.mapping_file)

        def make(name: str, transform: Callable) -> Sun397Dataset:
            pos = split.positions.get(name, np.zeros(0, dtype=np.int64))
            return Sun397Dataset(
                index.image_root, index.paths[pos], index.labels[pos], targets, transform, hp.cache_decoded
            )

        self.data_train = make("train", self.transforms.train())
        self.data_val = make("val", self.transforms.eval())
        self.data_test = make("test", self.transforms.eval())
        present = np.unique(np.asarray(targets)[self.data_train.scenes]) if len(self.data_train) else []
        log.info(
            "SUN397 (%s): %d train / %d val / %d test images, %d scene classes -> %d of %d hashtags; %s",
            hp.split,
            len(self.data_train),
            len(self.data_val),
            len(self.data_test),
            len(index.classes),
            len(present),
            len(self.hashtags),
            ", ".join(f"{k}={v}" for k, v in split.stats.items()),
        )

    @property
    def stats(self) -> dict[str, Any]:
        """The drop counts of the release (index) and of the chosen split."""
        return {**(self.index.stats if self.index else {}), **(self.split.stats if self.split else {})}

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
            "hashtag_mapping": {
                "file": Path(self.mapping_spec.mapping_file).name,
                **self.mapping_spec.source,
            },
            "transforms": self.transforms.describe(),
        }
