"""MS-COCO 2014 captions reader, Karpathy split and the partly paired training data.

Reads the release as published (the real one or the twin of :mod:`datamodules.synthetic.coco`)::

    <root>/annotations/captions_train2014.json, captions_val2014.json
    <root>/train2014/COCO_train2014_%012d.jpg, <root>/val2014/COCO_val2014_%012d.jpg
    <karpathy_split>  dataset_coco.json: images[] with filepath, filename, split (train/val/test/restval), cocoid

Captions come from the COCO JSON files (``annotations[].image_id/caption``); the Karpathy file only
says which image belongs to which split (``restval`` joins train, as in VSE++, unless
``include_restval=False``: then train is Karpathy's ``train``, all of train2014, 82,783 images, the
seed's "more than 80K captioned images"). The retrieval protocol needs exactly 5 captions per image:
images with more keep their first 5 by annotation order (``trimmed``), images with fewer are dropped
(``dropped_few_captions``). Images whose file is missing are dropped (``missing_image``). Repeated
entries that agree are read once (``duplicate_image_entries``, ``duplicate_split_entries``); entries
that contradict each other (one image id with two file names, one cocoid in two splits, one id in
both the train2014 and val2014 JSON) raise a :class:`DatasetFormatError` naming the file(s) and
entries, since no choice between them is safe (a test image could leak into training). A Karpathy
``filepath/filename`` that differs from the COCO file of its cocoid is counted
(``karpathy_path_mismatch``; the cocoid decides). Every count is logged; a split left empty raises a
:class:`DatasetFormatError` naming the split file and the counts.

Partly paired data (paired fraction ``p``, issue 6: "the remaining images and the remaining captions
are used unpaired, as two disjoint pools (no unpaired caption belongs to an unpaired image you could
match by index)"): a seeded ``p`` share of the training images keep their captions (pairs); every
other image is used twice, its pixels in the unpaired image pool and its captions in the unpaired
caption pool. An unpaired training row puts a pool image next to a caption drawn from the caption
pool's *other* images, never its own, so no row of the batch is a real pair the model could learn
from by index.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError, DuplicateRows, json_field, read_json, require_rows
from datamodules.preprocessing.images import ImageTransforms
from datamodules.preprocessing.text import WordVocabulary

log = logging.getLogger(__name__)
CAPTIONS_PER_IMAGE = 5


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


def read_coco_captions(
    path: str | Path, counts: Counter | None = None
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(file name by image id, captions by image id in annotation order)`` of a ``captions_*2014.json``.

    An ``images[]`` entry repeated with the same file name is read once (``duplicate_image_entries``
    in ``counts``); one id with two file names raises (its captions could belong to either)."""
    path = Path(path)
    counts = Counter() if counts is None else counts
    data = read_json(path, "COCO captions (info, images, licenses, annotations)")
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
    data = read_json(path, "the Karpathy split (images[].split, filepath, filename, cocoid)")
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
        kept = []
        for image in images:
            if image.path.is_file():
                kept.append(image)
            else:
                missing.append(image.path)
        missing_by_split[split] = len(images) - len(kept)
        splits[split] = kept
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
    for folder in ("train2014", "val2014"):
        ann = root / "annotations" / f"captions_{folder}.json"
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
    splits: dict[str, list[CocoImage]] = {"train": [], "val": [], "test": []}
    listed: Counter = Counter()
    without_captions: Counter = Counter()
    missing: Counter = Counter()
    if karpathy_split is None:
        source = root / "annotations" / "captions_val2014.json"
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
    sources = [source, *(root / "annotations" / f"captions_{f}.json" for f in ("train2014", "val2014"))]
    for split, images in splits.items():
        require_rows(
            images,
            split,
            *dict.fromkeys(sources),
            dropped={
                f"of {listed[split]} listed without 5 captions in the COCO JSON": without_captions[split],
                f"with the image file missing under {root}": missing[split],
            },
        )
    return splits, counts


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
        images: list[CocoImage],
        ids: Tensor,
        split: tuple[np.ndarray, np.ndarray, np.ndarray],
        transform: Any,
        decoded: DecodedImages,
        use_unpaired: bool = True,
    ) -> None:
        self.images, self.ids, self.transform, self.decoded = images, ids, transform, decoded
        self.paired, self.image_pool, self.caption_pool = (
            torch.as_tensor(a, dtype=torch.long) for a in split
        )
        # own[j]: position of image_pool[j] in the caption pool (-1: not there), skipped when drawing
        position = {int(c): k for k, c in enumerate(self.caption_pool)}
        self.own = torch.tensor([position.get(int(i), -1) for i in self.image_pool], dtype=torch.long)
        foreign = len(self.caption_pool) - (self.own >= 0).long()  # captions' images a row may draw from
        self.num_unpaired = len(self.image_pool) if use_unpaired and bool((foreign > 0).all()) else 0

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
            "image": self.transform(self.decoded.load(image, self.images[image].path)),
            "ids": self.ids[text, caption],
            "paired": k < len(self.paired),
        }


class CocoEvalImages(Dataset):
    """Evaluation items ``{image, ids [5, L]}``: an image with its five captions."""

    def __init__(self, images: list[CocoImage], ids: Tensor, transform: Any, decoded: DecodedImages) -> None:
        self.images, self.ids, self.transform, self.decoded = images, ids, transform, decoded

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {"image": self.transform(self.decoded.load(k, self.images[k].path)), "ids": self.ids[k]}


class CocoDataModule(SuiteDataModule):
    """MS-COCO 2014 (or its twin) for cross-modal retrieval with a paired fraction ``p``.

    Args:
        root: release folder (``annotations/``, ``train2014/``, ``val2014/``).
        karpathy_split: ``dataset_coco.json`` (``None``: official train; val2014 halved into val/test).
        paired_fraction: share ``p`` of training images that keep their captions.
        pair_seed: seed of the pair / unpaired split.
        use_unpaired: put the unpaired rows in the training set (``False``: the pairs alone, full
            batches of pairs; the experiment configs tie it to ``model.use_unpaired``).
        equal_steps: without the unpaired rows, an epoch still draws one row per training image
            (``1/p`` passes over the pairs, each reshuffled), so a pairs-only baseline trains as many
            steps as the model that uses every image (``False``: an epoch is one pass over the pairs).
        include_restval: Karpathy's ``restval`` joins train (113,287 images; ``False``: 82,783).
        check_images: drop (count, log) images whose file is missing at setup.
        vocab_size, max_length: word vocabulary (built on the training captions) and token length.
        max_eval_images: cap of val/test images (``None``: all; the 5K test has 5,000).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        cache_decoded: keep decoded images in memory.
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
        equal_steps: bool = True,
        include_restval: bool = True,
        check_images: bool = True,
        vocab_size: int = 10000,
        max_length: int = 32,
        max_eval_images: int | None = None,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool = False,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.transforms = transforms or ImageTransforms()
        self.vocabulary: WordVocabulary | None = None
        self.counts: Counter = Counter()

    def _encode(self, images: list[CocoImage]) -> Tensor:
        texts = [c for image in images for c in image.captions]
        ids, _ = self.vocabulary.encode(texts, max_length=self.hparams.max_length)
        padded = torch.zeros(len(texts), self.hparams.max_length, dtype=torch.long)
        padded[:, : ids.shape[1]] = ids
        return padded.view(len(images), CAPTIONS_PER_IMAGE, -1)

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:
            return
        hp = self.hparams
        splits, self.counts = read_coco(self.root, hp.karpathy_split, hp.include_restval, hp.check_images)
        for key, count in sorted(self.counts.items()):
            log.info("COCO reader: %d images %s", count, key)
        if hp.max_eval_images:
            splits["val"], splits["test"] = (
                splits["val"][: hp.max_eval_images],
                splits["test"][: hp.max_eval_images],
            )
        train = splits["train"]
        self.pairs = split_pairs(len(train), hp.paired_fraction, hp.pair_seed)
        self.vocabulary = WordVocabulary.build(
            (c for image in train for c in image.captions), max_size=hp.vocab_size
        )
        self.data_train = PartlyPairedCaptions(
            train,
            self._encode(train),
            self.pairs,
            self.transforms.train(),
            DecodedImages(len(train), hp.cache_decoded),
            hp.use_unpaired,
        )
        log.info(
            "COCO: %d train images (%d paired, %d unpaired images, %d unpaired caption sets; %d training rows%s, "
            "%d drawn per epoch), %d val, %d test",
            len(train),
            *(len(a) for a in self.pairs),
            len(self.data_train),
            "" if hp.use_unpaired else ", pairs only",
            round(self.train_epoch_fraction() * len(self.data_train)),
            len(splits["val"]),
            len(splits["test"]),
        )
        self.data_val, self.data_test = (
            CocoEvalImages(
                splits[s],
                self._encode(splits[s]),
                self.transforms.eval(),
                DecodedImages(len(splits[s]), hp.cache_decoded),
            )
            for s in ("val", "test")
        )

    def train_epoch_fraction(self) -> float:
        fraction = self.hparams.epoch_fraction
        if self.hparams.use_unpaired or not self.hparams.equal_steps:
            return fraction
        return fraction * len(self.data_train.images) / len(self.data_train)

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
