"""MS-COCO 2014 captions reader, Karpathy split and the partly paired training data.

Reads the release as published (the real one or the twin of :mod:`datamodules.synthetic.coco`)::

    <root>/annotations/captions_train2014.json, captions_val2014.json
    <root>/train2014/COCO_train2014_%012d.jpg, <root>/val2014/COCO_val2014_%012d.jpg
    <karpathy_split>  dataset_coco.json: images[] with filepath, filename, split (train/val/test/restval), cocoid

Captions come from the COCO JSON files (``annotations[].image_id/caption``); the Karpathy file only
says which image belongs to which split (``restval`` joins train, as in VSE++). The retrieval
protocol needs exactly 5 captions per image: images with more keep their first 5 by annotation
order (``trimmed``), images with fewer are dropped (``dropped_few_captions``); both are counted and
logged.

Partly paired data (paired fraction ``p``): a seeded ``p`` share of the training images keep their
captions (pairs); the other images are split in two disjoint halves, one used only for its pixels
(unpaired images), the other only for its captions (unpaired captions), so no unpaired caption
belongs to an unpaired image.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError
from datamodules.synthetic.coco import ensure_coco
from datamodules.transforms import ImageTransforms
from lit_modules.text_encoders import WordVocabulary

log = logging.getLogger(__name__)
CAPTIONS_PER_IMAGE = 5


@dataclass(frozen=True)
class CocoImage:
    cocoid: int
    path: Path
    captions: tuple[str, ...]


def _load_json(path: Path, contents: str) -> Any:
    try:
        return json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise DatasetFormatError(path, f"missing file; it should contain {contents}") from None
    except ValueError as err:
        raise DatasetFormatError(path, f"not valid JSON ({err})") from None


def _field(path: Path, entry: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise DatasetFormatError(path, f"{where} has no {key!r}", field=key)
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetFormatError(path, f"{where}: expected {kind.__name__}, got {value!r}", field=key)
    return value


def read_coco_captions(path: str | Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(file name by image id, captions by image id in annotation order)`` of a ``captions_*2014.json``."""
    path = Path(path)
    data = _load_json(path, "COCO captions (info, images, licenses, annotations)")
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetFormatError(path, "expected a top-level list", field=key)
    files: dict[int, str] = {}
    for n, image in enumerate(data["images"]):
        files[_field(path, image, "id", int, f"images[{n}]")] = _field(path, image, "file_name", str, f"images[{n}]")
    captions: dict[int, list[str]] = {i: [] for i in files}
    for n, ann in enumerate(data["annotations"]):
        image_id = _field(path, ann, "image_id", int, f"annotations[{n}]")
        caption = _field(path, ann, "caption", str, f"annotations[{n}]")
        if image_id not in captions:
            raise DatasetFormatError(path, f"annotations[{n}] names image {image_id}, absent from images",
                                     field="image_id")
        captions[image_id].append(caption.strip())
    return files, captions


def read_karpathy_split(path: str | Path) -> dict[int, tuple[str, str, str]]:
    """``cocoid -> (filepath, filename, split)`` of Karpathy's ``dataset_coco.json``."""
    path = Path(path)
    data = _load_json(path, "the Karpathy split (images[].split, filepath, filename, cocoid)")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(path, "expected a top-level list", field="images")
    out = {}
    for n, image in enumerate(data["images"]):
        where = f"images[{n}]"
        split = _field(path, image, "split", str, where)
        if split not in ("train", "val", "test", "restval"):
            raise DatasetFormatError(path, f"{where}: unknown split {split!r}", field="split")
        out[_field(path, image, "cocoid", int, where)] = (
            _field(path, image, "filepath", str, where), _field(path, image, "filename", str, where), split)
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


def read_coco(root: str | Path, karpathy_split: str | Path | None) -> tuple[dict[str, list[CocoImage]], Counter]:
    """Images by Karpathy split (``train`` includes ``restval``) and the counts of what was changed.

    Without a split file, ``train2014`` is train and ``val2014`` is val+test (halves, file order)."""
    root = Path(root)
    counts: Counter = Counter()
    by_id: dict[int, CocoImage] = {}
    folder_of: dict[int, str] = {}
    for folder in ("train2014", "val2014"):
        ann = root / "annotations" / f"captions_{folder}.json"
        files, captions = read_coco_captions(ann)
        for image_id, caps in five_captions(captions, counts).items():
            by_id[image_id] = CocoImage(image_id, root / folder / files[image_id], caps)
            folder_of[image_id] = folder
    splits: dict[str, list[CocoImage]] = {"train": [], "val": [], "test": []}
    if karpathy_split is None:
        val = [by_id[i] for i in by_id if folder_of[i] == "val2014"]
        splits["train"] = [by_id[i] for i in by_id if folder_of[i] == "train2014"]
        splits["val"], splits["test"] = val[: len(val) // 2], val[len(val) // 2:]
        return splits, counts
    for cocoid, (filepath, filename, split) in read_karpathy_split(karpathy_split).items():
        if cocoid not in by_id:
            counts["split_without_captions"] += 1
            continue
        splits["train" if split == "restval" else split].append(by_id[cocoid])
    return splits, counts


def split_pairs(num_images: int, paired_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(paired, unpaired_images, unpaired_captions)`` index arrays over the training images:
    ``round(p * n)`` seeded pairs, the rest halved into two disjoint unpaired pools."""
    if not 0.0 < paired_fraction <= 1.0:
        raise ValueError(f"paired_fraction must be in (0, 1], got {paired_fraction}")
    order = np.random.default_rng(seed).permutation(num_images)
    num_paired = max(1, round(paired_fraction * num_images))
    rest = order[num_paired:]
    half = (len(rest) + 1) // 2
    return np.sort(order[:num_paired]), np.sort(rest[:half]), np.sort(rest[half:])


class PartlyPairedCaptions(Dataset):
    """Training items ``{image, ids, paired}``: first every pair (an image and one of its captions,
    drawn per access), then unpaired items that put an unpaired image next to a caption of an
    unrelated image of the caption pool (``paired = False``: the model must not treat them as a pair)."""

    def __init__(self, images: list[CocoImage], ids: Tensor, split: tuple[np.ndarray, np.ndarray, np.ndarray],
                 transform: Any, decoded: DecodedImages) -> None:
        self.images, self.ids, self.transform, self.decoded = images, ids, transform, decoded
        self.paired, self.image_pool, self.caption_pool = (torch.as_tensor(a, dtype=torch.long) for a in split)
        self.num_unpaired = max(len(self.image_pool), len(self.caption_pool)) if len(self.image_pool) and len(self.caption_pool) else 0

    def __len__(self) -> int:
        return len(self.paired) + self.num_unpaired

    def __getitem__(self, k: int) -> dict[str, Any]:
        # torch's global generator: seeded per worker by Lightning (seed_everything(workers=True)).
        caption = int(torch.randint(CAPTIONS_PER_IMAGE, ()))
        if k < len(self.paired):
            image = text = int(self.paired[k])
        else:
            j = k - len(self.paired)
            image = int(self.image_pool[j % len(self.image_pool)])
            text = int(self.caption_pool[int(torch.randint(len(self.caption_pool), ()))])
        return {"image": self.transform(self.decoded.load(image, self.images[image].path)),
                "ids": self.ids[text, caption], "paired": k < len(self.paired)}


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
        vocab_size, max_length: word vocabulary (built on the training captions) and token length.
        max_eval_images: cap of val/test images (``None``: all; the 5K test has 5,000).
        transforms, batch_size, num_workers, pin_memory, split_seed, epoch_fraction: as every DataModule.
        synthetic: ``None`` for real data, else the arguments of :func:`ensure_coco`.
        cache_decoded: keep decoded images in memory.
    """

    def __init__(self, root: str, karpathy_split: str | None = None, paired_fraction: float = 1.0,
                 pair_seed: int = 0, vocab_size: int = 10000, max_length: int = 32,
                 max_eval_images: int | None = None, transforms: ImageTransforms | None = None,
                 batch_size: int = 128, num_workers: int = 0, pin_memory: bool | str = "auto", split_seed: int = 0,
                 epoch_fraction: float = 1.0, synthetic: dict[str, Any] | None = None,
                 cache_decoded: bool = False) -> None:
        super().__init__()
        if synthetic is not None:
            synthetic = {str(k): v for k, v in dict(synthetic).items()}
        self.save_hyperparameters(logger=False, ignore=["transforms"])
        self.transforms = transforms or ImageTransforms()
        self.vocabulary: WordVocabulary | None = None
        self.counts: Counter = Counter()

    def prepare_data(self) -> None:
        if self.hparams.synthetic:
            ensure_coco(self.hparams.root, **dict(self.hparams.synthetic))

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
        splits, self.counts = read_coco(hp.root, hp.karpathy_split)
        for key, count in sorted(self.counts.items()):
            log.info("COCO reader: %d images %s", count, key)
        if hp.max_eval_images:
            splits["val"], splits["test"] = splits["val"][: hp.max_eval_images], splits["test"][: hp.max_eval_images]
        train = splits["train"]
        self.pairs = split_pairs(len(train), hp.paired_fraction, hp.pair_seed)
        self.vocabulary = WordVocabulary.build((c for image in train for c in image.captions), max_size=hp.vocab_size)
        log.info("COCO: %d train images (%d paired, %d unpaired images, %d unpaired caption sets), %d val, %d test",
                 len(train), *(len(a) for a in self.pairs), len(splits["val"]), len(splits["test"]))
        self.data_train = PartlyPairedCaptions(train, self._encode(train), self.pairs, self.transforms.train(),
                                               DecodedImages(len(train), hp.cache_decoded))
        self.data_val, self.data_test = (
            CocoEvalImages(splits[s], self._encode(splits[s]), self.transforms.eval(),
                           DecodedImages(len(splits[s]), hp.cache_decoded)) for s in ("val", "test"))

    def denormalize(self, images: Tensor) -> Tensor:
        return self.transforms.denormalize(images)

    def export_metadata(self) -> dict[str, Any]:
        return {"vocabulary": self.vocabulary.state() if self.vocabulary else None,
                "max_length": self.hparams.max_length, "transforms": self.transforms.describe()}
