"""MS-COCO 2014 captions reader, Karpathy split, the prepared index and the partly paired training data.

Reads the release as published (the real one or the twin of :mod:`datamodules.synthetic.coco`)::

    <root>/annotations/captions_train2014.json, captions_val2014.json
    <root>/train2014/COCO_train2014_%012d.jpg, <root>/val2014/COCO_val2014_%012d.jpg
    <karpathy_split>  dataset_coco.json: images[] with filepath, filename, cocoid and
                      split (train/val/test/restval)

Captions come from the COCO JSON files (``annotations[].image_id/caption``); the Karpathy file only
says which image belongs to which split (``restval`` joins train, as in VSE++, unless
``include_restval=False``: then train is Karpathy's ``train``, all of train2014, 82,783 images, the
seed's "more than 80K captioned images"). Only the fields used are kept while parsing (the
Karpathy file's tokenised sentences are dropped as they are read). The retrieval protocol needs
exactly 5 captions per image: images with more keep their first 5 by annotation order
(``trimmed``), images with fewer are dropped (``dropped_few_captions``). Images whose file is
missing are dropped (``missing_image``). Repeated entries that agree are read once
(``duplicate_image_entries``, ``duplicate_split_entries``); entries that contradict each other (one
image id with two file names, one cocoid in two splits, one id in both the train2014 and val2014
JSON) raise a :class:`DatasetFormatError` naming the file(s) and entries, since no choice between
them is safe (a test image could leak into training). A Karpathy ``filepath/filename`` that differs
from the COCO file of its cocoid is counted (``karpathy_path_mismatch``; the cocoid decides). Every
count is logged; a split left empty raises a :class:`DatasetFormatError` naming the split file and
the counts.

**Prepared index.** Reading, the image checks, the vocabulary and the tokenisation happen once, in
:meth:`CocoDataModule.prepare` (one process per node), and land in ``<index_dir>/<settings digest>/``:
image paths, cocoids and the token ids of every caption as ``.npy`` arrays, the vocabulary and the
counts in ``manifest.json``. Every rank's ``setup`` memory-maps them (DataLoader workers share the
pages instead of copying millions of Python objects). The manifest records the sizes and
modification times of the source files and of the image folders: a changed release is re-indexed.

**Partly paired data** (paired fraction ``p``): a seeded ``p`` share of the training images keep
their captions (pairs); every other image is used twice, its pixels in the unpaired image pool and
its captions in the unpaired caption pool (two disjoint pools: no unpaired caption belongs to an
unpaired image you could match by index). An unpaired training row puts a pool image next to a
caption drawn from the caption pool's *other* images, never its own.

**Batch composition** (``batch_composition``): ``alternate`` (the default) draws whole batches of
pairs or whole batches of unpaired rows, never mixed, a share ``pair_share`` of the steps being
paired, as the seed authors' code does (``hse08_unimodel``, ``common/data_loading.py``: each step is
a paired batch with probability ``dataset_parallel_ratio``, else an unpaired one); here the paired
steps are spread evenly over the epoch instead of drawn at random. ``mixed`` (the earlier
behaviour) shuffles pairs and unpaired rows into the same batches, so a batch holds about ``p`` of
pairs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, default_collate

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError, DuplicateRows, json_field, read_json, require_rows
from datamodules.files import atomic_save_npy, atomic_write_text, current_umask, read_json_or
from datamodules.index_state import file_stamp, records_match, settings_digest
from datamodules.preprocessing.images import ImageTransforms
from datamodules.preprocessing.text import WordVocabulary
from datamodules.text_batches import TokenArrays

log = logging.getLogger(__name__)
CAPTIONS_PER_IMAGE = 5
SPLITS = ("train", "val", "test")
INDEX_VERSION = 1
MANIFEST = "manifest.json"
BATCH_COMPOSITIONS = ("alternate", "mixed")
IMAGE_FOLDERS = ("train2014", "val2014")


@dataclass(frozen=True)
class CocoImage:
    cocoid: int
    path: Path
    captions: tuple[str, ...]


def _refuse_conflicts(repeats: DuplicateRows, array: str, key: str, what: str) -> None:
    """Identical repeats are logged (and counted by the caller); an id with two different entries
    raises, naming both: which one is right cannot be told (a test image could leak into training)."""
    if repeats.conflicting:
        position, first, value = repeats.example
        raise DatasetFormatError(
            repeats.path,
            f"{array}[{first}] and {array}[{position}] give {key} {value} two "
            f"different {what} ({repeats.conflicting} such repeats in all)",
            field=key.split()[-1],
        )
    repeats.log(log)


def _slim_coco_entry(obj: dict[str, Any]) -> dict[str, Any]:
    """Keep what the reader uses of a COCO captions entry (annotations: image id and caption;
    images: id and file name); other objects unchanged."""
    if "caption" in obj or "image_id" in obj:
        return {k: obj[k] for k in ("image_id", "caption") if k in obj}
    if "file_name" in obj:
        return {k: obj[k] for k in ("id", "file_name") if k in obj}
    return obj


def _slim_karpathy_entry(obj: dict[str, Any]) -> dict[str, Any] | None:
    """Drop the Karpathy file's tokenised sentences (``sentences[]``, ``sentids``): the captions
    are read from the COCO files."""
    if "tokens" in obj or "sentid" in obj:
        return None
    obj.pop("sentences", None)
    obj.pop("sentids", None)
    return obj


def read_coco_captions(
    path: str | Path, counts: Counter | None = None
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(file name by image id, captions by image id in annotation order)`` of a ``captions_*2014.json``.

    An ``images[]`` entry repeated with the same file name is read once (``duplicate_image_entries``
    in ``counts``); one id with two file names raises (its captions could belong to either)."""
    path = Path(path)
    counts = Counter() if counts is None else counts
    data = read_json(path, "COCO captions (info, images, licenses, annotations)", _slim_coco_entry)
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetFormatError(path, "expected a top-level list", field=key)
    files: dict[int, str] = {}
    repeats = DuplicateRows(path, unit="entry")
    for n, image in enumerate(data["images"]):
        image_id = json_field(image, "id", int, path, where=f"images[{n}]: ")
        file_name = json_field(image, "file_name", str, path, where=f"images[{n}]: ")
        if repeats.is_new(image_id, file_name, n):
            files[image_id] = file_name
    _refuse_conflicts(repeats, "images", "image id", "file names")
    counts["duplicate_image_entries"] += repeats.identical
    captions: dict[int, list[str]] = {i: [] for i in files}
    for n, ann in enumerate(data["annotations"]):
        image_id = json_field(ann, "image_id", int, path, where=f"annotations[{n}]: ")
        caption = json_field(ann, "caption", str, path, where=f"annotations[{n}]: ")
        if image_id not in captions:
            raise DatasetFormatError(
                path, f"annotations[{n}] names image {image_id}, absent from images", field="image_id"
            )
        captions[image_id].append(caption.strip())
    return files, captions


def read_karpathy_split(path: str | Path, counts: Counter | None = None) -> dict[int, tuple[str, str, str]]:
    """``cocoid -> (filepath, filename, split)`` of Karpathy's ``dataset_coco.json``.

    A repeated identical entry is read once (``duplicate_split_entries`` in ``counts``); one cocoid
    with two different entries (another split or file) raises naming both."""
    path = Path(path)
    counts = Counter() if counts is None else counts
    data = read_json(
        path, "the Karpathy split (images[].split, filepath, filename, cocoid)", _slim_karpathy_entry
    )
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(path, "expected a top-level list", field="images")
    out: dict[int, tuple[str, str, str]] = {}
    repeats = DuplicateRows(path, unit="entry")
    for n, image in enumerate(data["images"]):
        where = f"images[{n}]: "
        split = json_field(image, "split", str, path, where=where)
        if split not in ("train", "val", "test", "restval"):
            raise DatasetFormatError(path, f"{where}unknown split {split!r}", field="split")
        cocoid = json_field(image, "cocoid", int, path, where=where)
        record = (
            json_field(image, "filepath", str, path, where=where),
            json_field(image, "filename", str, path, where=where),
            split,
        )
        if repeats.is_new(cocoid, record, n):
            out[cocoid] = record
    _refuse_conflicts(repeats, "images", "cocoid", "entries (another split or file)")
    counts["duplicate_split_entries"] += repeats.identical
    return out


def five_captions(captions: dict[int, list[str]], counts: Counter) -> dict[int, tuple[str, ...]]:
    """Exactly 5 captions per image: more are trimmed to the first 5, fewer drop the image (counted)."""
    out = {}
    for image_id, caps in captions.items():
        if len(caps) < CAPTIONS_PER_IMAGE:
            counts["dropped_few_captions"] += 1
            continue
        if len(caps) > CAPTIONS_PER_IMAGE:
            counts["trimmed"] += 1
        out[image_id] = tuple(caps[:CAPTIONS_PER_IMAGE])
    return out


def _check_files(splits: dict[str, list[CocoImage]], counts: Counter, missing_by_split: Counter) -> None:
    """Drop the images whose file is missing (counted; a few logged by name)."""
    missing: list[Path] = []
    for split, images in splits.items():
        present = [image.path.is_file() for image in images]
        splits[split] = [image for image, ok in zip(images, present) if ok]
        missing += [image.path for image, ok in zip(images, present) if not ok]
        missing_by_split[split] = len(images) - len(splits[split])
    if missing:
        counts["missing_image"] += len(missing)
        log.warning(
            "COCO reader: dropped %d images whose file is missing, e.g. %s",
            len(missing),
            ", ".join(str(p) for p in missing[:5]),
        )


def read_coco(
    root: str | Path,
    karpathy_split: str | Path | None,
    include_restval: bool = True,
    check_images: bool = True,
) -> tuple[dict[str, list[CocoImage]], Counter]:
    """Images by Karpathy split (``train`` includes ``restval`` unless ``include_restval=False``) and
    the counts of what was changed (see the module doc).

    Without a split file, ``train2014`` is train and ``val2014`` is val+test (halves, file order).
    ``check_images``: drop (and count) images whose file is missing. Raises
    :class:`DatasetFormatError` when a split ends up empty, naming the split file and the counts."""
    root = Path(root)
    counts: Counter = Counter()
    by_id: dict[int, CocoImage] = {}
    folder_of: dict[int, str] = {}
    file_of: dict[int, str] = {}
    json_of: dict[int, Path] = {}
    for folder in IMAGE_FOLDERS:
        ann = _captions_file(root, folder)
        files, captions = read_coco_captions(ann, counts)
        for image_id in files:
            if image_id in json_of:
                raise DatasetFormatError(
                    ann,
                    f"image id {image_id} ({files[image_id]!r}) is also in "
                    f"{json_of[image_id]} ({file_of[image_id]!r}): an image belongs "
                    "to one of train2014/val2014",
                    field="id",
                )
            json_of[image_id], file_of[image_id] = ann, files[image_id]
        for image_id, caps in five_captions(captions, counts).items():
            by_id[image_id] = CocoImage(image_id, root / folder / files[image_id], caps)
            folder_of[image_id] = folder
        del files, captions
    splits: dict[str, list[CocoImage]] = {s: [] for s in SPLITS}
    listed: Counter = Counter()
    without_captions: Counter = Counter()
    missing: Counter = Counter()
    if karpathy_split is None:
        source = _captions_file(root, "val2014")
        val = [by_id[i] for i in by_id if folder_of[i] == "val2014"]
        splits["train"] = [by_id[i] for i in by_id if folder_of[i] == "train2014"]
        splits["val"], splits["test"] = val[: len(val) // 2], val[len(val) // 2 :]
        listed.update({s: len(v) for s, v in splits.items()})
    else:
        source = Path(karpathy_split)
        for cocoid, (filepath, filename, split) in read_karpathy_split(karpathy_split, counts).items():
            if split == "restval" and not include_restval:
                counts["restval_left_out"] += 1
                continue
            split = "train" if split == "restval" else split
            listed[split] += 1
            if cocoid not in by_id:
                counts["split_without_captions"] += 1
                without_captions[split] += 1
                continue
            if (filepath, filename) != (folder_of[cocoid], by_id[cocoid].path.name):
                counts["karpathy_path_mismatch"] += 1
            splits[split].append(by_id[cocoid])
        if counts["karpathy_path_mismatch"]:
            log.warning(
                "COCO reader: %d entries of %s name another file than the COCO JSON gives their cocoid "
                "(the cocoid decides)",
                counts["karpathy_path_mismatch"],
                source,
            )
    if check_images:
        _check_files(splits, counts, missing)
    for split, images in splits.items():
        require_rows(
            images,
            split,
            *dict.fromkeys([source, *_source_files(root, None)]),
            dropped={
                f"of {listed[split]} listed without 5 captions in the COCO JSON": without_captions[split],
                f"with the image file missing under {root}": missing[split],
            },
        )
    return splits, counts


def _captions_file(root: Path, folder: str) -> Path:
    return root / "annotations" / f"captions_{folder}.json"


# ----------------------------------------------------------------------------- the prepared index
def _source_files(root: Path, karpathy_split: str | Path | None) -> list[Path]:
    files = [_captions_file(root, folder) for folder in IMAGE_FOLDERS]
    return files + ([Path(karpathy_split)] if karpathy_split is not None else [])


def _fingerprint(root: Path, karpathy_split: str | Path | None) -> dict[str, list[int]]:
    """Size and modification time of every source file, and the modification time of the image
    folders (a file added or removed changes it): what makes an index stale."""
    stamps = {str(path): file_stamp(path) for path in _source_files(root, karpathy_split)}
    for folder in IMAGE_FOLDERS:
        stamp = file_stamp(root / folder)
        stamps[str(root / folder)] = stamp and [0, stamp[1]]
    # a missing source: the reader names it
    return {path: stamp for path, stamp in stamps.items() if stamp is not None}


def index_settings(
    root: str | Path,
    karpathy_split: str | Path | None,
    include_restval: bool,
    check_images: bool,
    vocab_size: int,
    max_length: int,
) -> dict[str, Any]:
    return {
        "version": INDEX_VERSION,
        "root": str(Path(root).resolve()),
        "karpathy_split": str(Path(karpathy_split).resolve()) if karpathy_split is not None else None,
        "include_restval": bool(include_restval),
        "check_images": bool(check_images),
        "vocab_size": int(vocab_size),
        "max_length": int(max_length),
    }


def index_folder(index_dir: str | Path, settings: dict[str, Any]) -> Path:
    """``<index_dir>/<digest of the settings>``: indexes of other settings live side by side."""
    return Path(index_dir) / settings_digest(settings)


def index_is_current(folder: Path, settings: dict[str, Any]) -> bool:
    manifest = read_json_or(folder / MANIFEST)
    if manifest is None:
        return False
    sources = _fingerprint(Path(settings["root"]), settings["karpathy_split"])
    return records_match(manifest, settings=settings, sources=sources)


def build_index(folder: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Read the release, check the images, build the vocabulary on the training captions and write
    the index into ``folder`` (atomically: a staging folder renamed into place). Returns the manifest."""
    root = Path(settings["root"])
    fingerprint = _fingerprint(root, settings["karpathy_split"])
    splits, counts = read_coco(
        root, settings["karpathy_split"], settings["include_restval"], settings["check_images"]
    )
    vocabulary = WordVocabulary.build(
        (c for image in splits["train"] for c in image.captions), max_size=settings["vocab_size"]
    )
    images = [image for split in SPLITS for image in splits[split]]
    length = settings["max_length"]
    tokens = np.zeros((len(images), CAPTIONS_PER_IMAGE, length), dtype=TokenArrays.id_dtype(len(vocabulary)))
    step = 4096  # images per encoding call: bounded temporary tensors
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        ids, _ = vocabulary.encode([c for image in chunk for c in image.captions], max_length=length)
        tokens[start : start + len(chunk), :, : ids.shape[1]] = ids.view(len(chunk), CAPTIONS_PER_IMAGE, -1)
    paths = np.array([str(image.path.relative_to(root)) for image in images], dtype=np.bytes_)
    cocoids = np.array([image.cocoid for image in images], dtype=np.int64)
    manifest = {
        "settings": settings,
        "sources": fingerprint,
        "sizes": {split: len(splits[split]) for split in SPLITS},
        "counts": dict(counts),
        "vocabulary": vocabulary.words,
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        for name, array in (("tokens", tokens), ("paths", paths), ("cocoids", cocoids)):
            atomic_save_npy(staging / f"{name}.npy", array)
        atomic_write_text(staging / MANIFEST, json.dumps(manifest))
        if folder.exists():  # a stale index of the same settings (sources changed)
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:  # another node renamed its copy first
            if not index_is_current(folder, settings):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


class CaptionedImageRows:
    """The images of one split as rows of arrays (the prepared index, memory-mapped): image ``i``'s
    file (``root / paths[i]``) and the token ids of its five captions (``tokens[i] [5, L]``). No
    per-image Python objects, so DataLoader workers share these pages instead of copying them."""

    def __init__(self, root: str | Path, paths: np.ndarray, tokens: np.ndarray) -> None:
        if len(paths) != len(tokens):
            raise ValueError(f"{len(paths)} paths but {len(tokens)} caption rows")
        self.root, self.paths, self.tokens = Path(root), paths, tokens

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, i: int) -> Path:
        return self.root / self.paths[i].decode()

    def ids(self, i: int, caption: int | None = None) -> Tensor:
        """Token ids of image ``i``'s captions ``[5, L]`` (or of one caption, ``[L]``), int64."""
        row = self.tokens[i] if caption is None else self.tokens[i, caption]
        return torch.from_numpy(np.array(row, dtype=np.int64))


@dataclass
class CocoIndex:
    """A prepared index, loaded: the splits, the vocabulary and the reader's counts."""

    splits: dict[str, CaptionedImageRows]
    vocabulary: WordVocabulary
    counts: Counter


def load_index(folder: Path, root: str | Path) -> CocoIndex:
    manifest = json.loads((folder / MANIFEST).read_text())
    tokens = np.load(folder / "tokens.npy", mmap_mode="r")
    paths = np.load(folder / "paths.npy", mmap_mode="r")
    splits, start = {}, 0
    for split in SPLITS:
        stop = start + manifest["sizes"][split]
        splits[split] = CaptionedImageRows(root, paths[start:stop], tokens[start:stop])
        start = stop
    return CocoIndex(splits, WordVocabulary(manifest["vocabulary"]), Counter(manifest["counts"]))


# ----------------------------------------------------------------------------- training data
def split_pairs(
    num_images: int, paired_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(paired, unpaired_images, unpaired_captions)`` index arrays over the training images:
    ``round(p * n)`` seeded pairs; every other image is in both unpaired pools (its pixels in the
    image pool, its captions in the caption pool; :class:`PartlyPairedCaptions` never puts a caption
    next to its own image)."""
    if not 0.0 < paired_fraction <= 1.0:
        raise ValueError(f"paired_fraction must be in (0, 1], got {paired_fraction}")
    order = np.random.default_rng(seed).permutation(num_images)
    num_paired = max(1, round(paired_fraction * num_images))
    rest = np.sort(order[num_paired:])
    return np.sort(order[:num_paired]), rest, rest.copy()


class PartlyPairedCaptions(Dataset):
    """Training items ``{image, ids, paired}``: first every pair (an image and one of its captions,
    drawn per access), then (with ``use_unpaired``) one row per image of the unpaired image pool,
    next to a caption of another image of the caption pool (``paired = False``: the model must not
    treat them as a pair). The caption's image is drawn per access among the pool's images other than
    the row's own, so every epoch sees every unpaired image and a fresh mix of unpaired captions.
    Without ``use_unpaired`` the dataset is the pairs alone (the VSE++ baseline: full batches of pairs)."""

    def __init__(
        self,
        images: CaptionedImageRows,
        split: tuple[np.ndarray, np.ndarray, np.ndarray],
        transform: Any,
        decoded: DecodedImages,
        use_unpaired: bool = True,
    ) -> None:
        self.images, self.transform, self.decoded = images, transform, decoded
        self.paired, self.image_pool, self.caption_pool = (np.asarray(a, dtype=np.int64) for a in split)
        # own[j]: position of image_pool[j] in the caption pool (-1: not there), skipped when drawing
        position = np.full(len(images), -1, dtype=np.int64)
        position[self.caption_pool] = np.arange(len(self.caption_pool))
        self.own = position[self.image_pool]
        foreign = len(self.caption_pool) - (self.own >= 0)  # captions' images a row may draw from
        self.num_unpaired = len(self.image_pool) if use_unpaired and bool((foreign > 0).all()) else 0

    @property
    def num_pairs(self) -> int:
        return len(self.paired)

    def __len__(self) -> int:
        return len(self.paired) + self.num_unpaired

    def __getitem__(self, k: int) -> dict[str, Any]:
        # torch's global generator: seeded per worker by Lightning (seed_everything(workers=True)).
        caption = int(torch.randint(CAPTIONS_PER_IMAGE, ()))
        if k < len(self.paired):
            image = text = int(self.paired[k])
        else:
            j = k - len(self.paired)
            image, own = int(self.image_pool[j]), int(self.own[j])
            r = int(torch.randint(len(self.caption_pool) - (own >= 0), ()))
            text = int(self.caption_pool[r + (0 <= own <= r)])  # skips the image's own captions
        return {
            "image": self.transform(self.decoded.load(image, self.images.path(image))),
            "ids": self.images.ids(text, caption),
            "paired": k < len(self.paired),
        }


class AlternatingBatches(Sampler[list[int]]):
    """Whole batches of pairs or whole batches of unpaired rows of a :class:`PartlyPairedCaptions`,
    never mixed, with a share ``pair_share`` of the steps paired, spread evenly over the epoch
    (step ``s`` is paired when ``floor((s + 1) r) > floor(s r)``; without unpaired rows every step is).

    An epoch has ``steps`` steps of ``batch_size`` rows per rank. Each kind of batch takes its rows
    from its own stream of seeded permutations (of the pairs, of the unpaired rows), fresh every
    epoch and continued across passes, so over epochs every pair and every unpaired row is drawn
    about equally often; global batch ``t`` of a kind holds stream rows ``[t W B, (t + 1) W B)`` and rank
    ``r`` takes its ``r``-th ``B`` of them. Every rank draws the same sequence of batch kinds
    (the loss terms, hence the collectives, are the same on every rank at every step). A pass ends
    with the rows short of a global batch left out (a fresh permutation follows), so no batch holds a
    row twice. ``sampler``
    is the rank's :class:`~datamodules.samplers.EpochFractionSampler`: its seed, epoch, rank and
    replica count are used (and its ``loader_generator`` reseeded through ``set_epoch``).
    """

    def __init__(
        self, sampler: Any, num_pairs: int, num_unpaired: int, batch_size: int, steps: int, pair_share: float
    ) -> None:
        if not 0.0 < pair_share <= 1.0:
            raise ValueError(f"pair_share must be in (0, 1], got {pair_share}")
        if num_pairs <= 0:
            raise ValueError("alternating batches need at least one pair")
        self.sampler, self.num_pairs, self.num_unpaired = sampler, num_pairs, num_unpaired
        self.steps, self.share = max(1, steps), pair_share if num_unpaired > 0 else 1.0
        world = sampler.num_replicas
        self.pair_batch = min(batch_size, num_pairs // world) or 1
        self.unpaired_batch = min(batch_size, num_unpaired // world) or 1
        if self.pair_batch < batch_size:
            log.warning(
                "COCO: %d pairs over %d process(es): paired batches of %d rows instead of %d",
                num_pairs,
                world,
                self.pair_batch,
                batch_size,
            )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def kinds(self) -> list[bool]:
        """Per step of the epoch: paired (``True``) or unpaired."""
        r = self.share
        return [math.floor((s + 1) * r + 1e-9) > math.floor(s * r + 1e-9) for s in range(self.steps)]

    def __len__(self) -> int:
        return self.steps

    def _stream(self, offset: int, size: int, batch: int, count: int, salt: int) -> list[list[int]]:
        """``count`` of this rank's batches from the epoch's stream of permutations of ``size`` rows."""
        world, rank = self.sampler.num_replicas, self.sampler.rank
        needed = count * world * batch
        epoch = self.sampler.epoch
        g = torch.Generator().manual_seed((self.sampler.seed + 1_000_003 * epoch + salt) % (2**63 - 1))
        usable = size // (world * batch) * world * batch  # each pass drops the rows short of a global batch,
        passes = max(1, math.ceil(needed / max(1, usable)))  # so that no batch holds a row twice
        order = (
            torch.cat([torch.randperm(size, generator=g)[:usable] for _ in range(passes)])[:needed] + offset
        )
        rows = order.view(count, world, batch)[:, rank] if count else order.view(0, batch)
        return rows.tolist()

    def __iter__(self) -> Iterator[list[int]]:
        kinds = self.kinds()
        paired = self._stream(0, self.num_pairs, self.pair_batch, sum(kinds), salt=1)
        unpaired = self._stream(
            self.num_pairs, max(1, self.num_unpaired), self.unpaired_batch, len(kinds) - sum(kinds), salt=2
        )
        streams = {True: iter(paired), False: iter(unpaired)}
        return iter([next(streams[kind]) for kind in kinds])


def collate_trimmed(items: list[dict[str, Any]]) -> dict[str, Any]:
    """PyTorch's default collation, then the token ids cut after the batch's longest caption (ids are
    padded at the end, so nothing else changes: the text encoder reads each caption up to its last
    token, the decoder's loss skips padding): the text parts run on ~11 tokens instead of ``max_length``."""
    batch = default_collate(items)
    ids = batch["ids"]
    length = max(1, int((ids > 0).sum(dim=-1).max())) if ids.numel() else 1
    batch["ids"] = ids[..., :length].contiguous()
    return batch


class CocoEvalImages(Dataset):
    """Evaluation items ``{image, ids [5, L]}``: an image with its five captions."""

    def __init__(self, images: CaptionedImageRows, transform: Any, decoded: DecodedImages) -> None:
        self.images, self.transform, self.decoded = images, transform, decoded

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {
            "image": self.transform(self.decoded.load(k, self.images.path(k))),
            "ids": self.images.ids(k),
        }


class CocoDataModule(SuiteDataModule):
    """MS-COCO 2014 (or its twin) for cross-modal retrieval with a paired fraction ``p``.

    Args:
        root: release folder (``annotations/``, ``train2014/``, ``val2014/``).
        karpathy_split: ``dataset_coco.json`` (``None``: official train; val2014 halved into val/test).
        paired_fraction: share ``p`` of training images that keep their captions.
        pair_seed: seed of the pair / unpaired split.
        use_unpaired: put the unpaired rows in the training set (``False``: the pairs alone, full
            batches of pairs; the experiment configs tie it to ``model.use_unpaired``).
        batch_composition: ``alternate`` (whole paired or unpaired batches, ``pair_share`` of the
            steps paired) or ``mixed`` (pairs and unpaired rows shuffled into the same batches).
        pair_share: the share of paired batches (``alternate``; 1 without unpaired rows).
        equal_steps: an epoch is one step per ``batch_size`` training images (``1/p`` passes over the
            pairs for a pairs-only baseline), so every model trains as many steps per epoch at every
            ``p``; ``False``: an epoch is one pass over the pairs (and, with ``alternate``, the
            unpaired batches ``pair_share`` implies next to them).
        include_restval: Karpathy's ``restval`` joins train (113,287 images; ``False``: 82,783).
        check_images: drop (count, log) images whose file is missing, once, when the index is built.
        vocab_size, max_length: word vocabulary (built on the training captions) and token length.
        max_eval_images: cap of val/test images (``None``: all; the 5K test has 5,000).
        index_dir: where the prepared index lives (default ``<root>/index``; set it when the release
            folder is read-only).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        cache_decoded: keep decoded images in memory (``True``: up to the default budget; a number:
            a budget in MB per process).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`datamodules.synthetic.coco.ensure_coco`).
    """

    synthetic_writer = "datamodules.synthetic.coco.ensure_coco"

    def __init__(
        self,
        root: str,
        karpathy_split: str | None = None,
        paired_fraction: float = 1.0,
        pair_seed: int = 0,
        use_unpaired: bool = True,
        batch_composition: str = "alternate",
        pair_share: float = 0.5,
        equal_steps: bool = True,
        include_restval: bool = True,
        check_images: bool = True,
        vocab_size: int = 10000,
        max_length: int = 32,
        max_eval_images: int | None = None,
        index_dir: str | None = None,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool | float = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        if batch_composition not in BATCH_COMPOSITIONS:
            raise ValueError(
                f"batch_composition must be one of {BATCH_COMPOSITIONS}, got {batch_composition!r}"
            )
        self.transforms = transforms or ImageTransforms()
        self.vocabulary: WordVocabulary | None = None
        self.counts: Counter = Counter()
        self.pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ preparation (once per node)
    def _settings(self) -> dict[str, Any]:
        hp = self.hparams
        return index_settings(
            self.root, hp.karpathy_split, hp.include_restval, hp.check_images, hp.vocab_size, hp.max_length
        )

    def index_folder(self) -> Path:
        return index_folder(self.hparams.index_dir or self.root / "index", self._settings())

    def prepare(self) -> None:
        settings, folder = self._settings(), self.index_folder()
        if index_is_current(folder, settings):
            return
        log.info("COCO: building the index %s from %s", folder, self.root)
        build_index(folder, settings)

    # ------------------------------------------------------------------ setup (every rank)
    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:
            return
        hp = self.hparams
        self.prepare()  # returns at once when current; builds when setup runs alone (e.g. a notebook)
        index = load_index(self.index_folder(), self.root)
        self.vocabulary, self.counts = index.vocabulary, index.counts
        for key, count in sorted(self.counts.items()):
            log.info("COCO reader: %d images %s", count, key)
        splits = index.splits
        first = slice(hp.max_eval_images or None)  # None: all
        for split in ("val", "test"):
            rows = splits[split]
            splits[split] = CaptionedImageRows(rows.root, rows.paths[first], rows.tokens[first])
        train = splits["train"]
        self.pairs = split_pairs(len(train), hp.paired_fraction, hp.pair_seed)
        self.data_train = PartlyPairedCaptions(
            train,
            self.pairs,
            self.transforms.train(),
            DecodedImages(hp.cache_decoded),
            hp.use_unpaired,
        )
        log.info(
            "COCO: %d train images (%d paired, %d unpaired images, %d unpaired caption sets; %d training "
            "rows%s, %s batches), %d val, %d test",
            len(train),
            *(len(a) for a in self.pairs),
            len(self.data_train),
            "" if hp.use_unpaired else ", pairs only",
            hp.batch_composition,
            len(splits["val"]),
            len(splits["test"]),
        )
        self.data_val, self.data_test = (
            CocoEvalImages(splits[s], self.transforms.eval(), DecodedImages(hp.cache_decoded))
            for s in ("val", "test")
        )

    # ------------------------------------------------------------------ batching
    def train_epoch_fraction(self) -> float:
        """``mixed`` batches: the share of the training rows an epoch draws (equal steps: one row per
        training image, i.e. ``1/p`` passes over the pairs of a pairs-only baseline)."""
        fraction = self.hparams.epoch_fraction
        if self.hparams.use_unpaired or not self.hparams.equal_steps:
            return fraction
        return fraction * len(self.data_train.images) / len(self.data_train)

    def train_steps(self, world: int) -> int:
        """``alternate`` batches: the steps of one epoch (see ``equal_steps``)."""
        hp, data = self.hparams, self.data_train
        rows = hp.batch_size * world
        if hp.equal_steps:
            return max(1, round(hp.epoch_fraction * len(data.images) / rows))
        share = hp.pair_share if data.num_unpaired else 1.0
        return max(1, round(hp.epoch_fraction * data.num_pairs / rows / share))

    def batch_sampler(self, sampler: Sampler[int], dataset: Dataset, split: str) -> Sampler[list[int]] | None:
        if split != "train" or self.hparams.batch_composition != "alternate":
            return None
        data = self.data_train
        return AlternatingBatches(
            sampler,
            data.num_pairs,
            data.num_unpaired,
            self.hparams.batch_size,
            self.train_steps(sampler.num_replicas),
            self.hparams.pair_share,
        )

    def collate_fn(self, split: str) -> Any:
        return collate_trimmed

    def info(self) -> DataInfo:
        return DataInfo(
            vocab_size=len(self.vocabulary),
            pad_id=self.vocabulary.pad_id,
            num_train=len(self.data_train),
            image_pipeline=self.transforms.describe(),
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "vocabulary": self.vocabulary.state() if self.vocabulary else None,
            "max_length": self.hparams.max_length,
            "transforms": self.transforms.describe(),
        }
