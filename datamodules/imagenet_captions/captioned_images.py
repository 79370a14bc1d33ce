"""ImageNet-Captions images + captions for a classifier trained with relevance weights (seed 000's use
of the filter's coefficients).

``prepare`` (once per node) does the expensive work and leaves it on disk under ``dataset_dir``:

* ``index/``: every release entry's label, per-class train/test split and whether its image exists
  (the image check runs here, once, not in every process's ``setup``), with the filenames and
  caption texts; rebuilt when the release files or the split settings change (delete the folder to
  check the images again);
* ``<mode>_<digest>/``: for this mode and relevance file, the training and test rows, the loss
  weights and the captions' token ids (the caption vocabulary is built on the training texts).

``setup`` (every process) memory-maps those arrays; items read their image from disk.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError, json_field, read_jsonl, require_rows
from datamodules.files import atomic_save_npy, atomic_savez, atomic_write_jsonl, atomic_write_text
from datamodules.imagenet_captions.reader import (
    read_class_descriptions,
    read_imagenet_captions,
    read_synset_mapping,
    split_per_class,
)
from datamodules.imagenet_captions.relevance_dataset import release_stamps
from datamodules.index_state import settings_digest, source_stamp, subfolder_times
from datamodules.preprocessing.images import ImageTransforms
from datamodules.preprocessing.text import build_tokenizer, tokenizer_from_state
from datamodules.text_batches import (
    ImageCaptionCollate,
    LengthGroupedBatches,
    TokenArrays,
    TokenizedTexts,
    encode_to_arrays,
)

log = logging.getLogger(__name__)

WEIGHTING_MODES = ("unweighted", "weighted", "drop")
#: What the filter removes from a training item whose caption it drops.
FILTERED_PARTS = ("text", "item")
INDEX_VERSION = 1


def folder_stamp(image_root: Path) -> str:
    """A digest of the image folder's class folders and their modification times: adding or deleting
    an image changes its folder's time, so the cached image check is redone (1,000 ``stat`` calls on
    ImageNet, not 464k)."""
    return settings_digest(subfolder_times(image_root), length=40) if image_root.is_dir() else "missing"


class CaptionedImages(Dataset):
    """Image (``<image_root>/<wnid>/<filename>``), caption token ids, label and loss weight per item.

    Args:
        image_root: the images' folder.
        wnids: class index -> wnid (the image's folder).
        filenames: the image file names (bytes, one per item).
        texts: the items' token ids, labels and weights.
        transform: the image pipeline.
        cache_decoded: :class:`~datamodules.base.DecodedImages`'s cache (off on real data).
    """

    def __init__(
        self,
        image_root: Path,
        wnids: list[str],
        filenames: np.ndarray,
        texts: TokenizedTexts,
        transform=None,
        cache_decoded: bool | float = False,
    ) -> None:
        self.image_root, self.wnids, self.filenames = Path(image_root), list(wnids), filenames
        self.texts, self.transform = texts, transform
        self.images = DecodedImages(cache=cache_decoded)

    def __len__(self) -> int:
        return len(self.texts)

    def path(self, i: int) -> Path:
        return self.image_root / self.wnids[int(self.texts.labels[i])] / self.filenames[i].decode()

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.images.load(i, self.path(i))
        return {**self.texts[i], "image": self.transform(image) if self.transform else image}

    @property
    def lengths(self) -> list[int]:
        return self.texts.lengths


class CaptionedImagesDataModule(LengthGroupedBatches, SuiteDataModule):
    """ImageNet-Captions images + captions for a classifier trained with relevance weights.

    The captions are split per class as the relevance dataset (the same ``split`` settings and seed,
    all captions); ``mode`` says what the training split uses from ``relevance_file``
    (``kept_captions.jsonl`` of ``experiments.score_relevance``): ``unweighted``: every caption,
    weight 1; ``drop``: the captions the filter dropped lose their text (the item keeps its image and
    label: the seed's "the text information is discarded"), weight 1; ``weighted``: as ``drop``, and
    an item with a kept caption weighs its relevance coefficient (``coefficient``: the column of the
    relevance file), an item whose caption was dropped ``dropped_weight``. ``filtered: item`` removes
    the whole item instead (the suite's earlier behaviour). The test split is the same in every mode
    (every test caption, weight 1: the filter reads a caption's label, so filtering test captions
    would leak it), so the modes are comparable. Caption tokens come from the tokenizer of
    ``text_encoder`` built on the training texts. With ``check_images`` captions whose image is
    missing are dropped after the split (counted, logged).

    Args:
        root, captions_file, descriptions_file, synset_mapping: the release (as the relevance data).
        split: ``test_fraction``, ``seed``, ``small_class``, ``min_test_share`` of
            :func:`~datamodules.imagenet_captions.reader.split_per_class`; ``min_sentences``: the
            class-description check; ``with_tags``: the caption text.
        mode, relevance_file, coefficient, filtered, dropped_weight: see above.
        image_dir: the images' folder under ``root`` (ImageNet's ``train`` layout).
        dataset_dir: where ``prepare`` leaves its work (default ``<root>/captioned_images``).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        cache_decoded: keep decoded images in memory: ``false`` (real data), ``true`` or a budget in MB
            per process (:class:`~datamodules.base.DecodedImages`).
        text_encoder, text_vocab_size, text_min_freq, text_max_length, pool_batches: the captions' tokens.
        **shared: see :class:`~datamodules.base.SuiteDataModule`.
    """

    synthetic_writer = "datamodules.synthetic.imagenet_captions.ensure_imagenet_captions"
    collate = ImageCaptionCollate

    def __init__(
        self,
        root: str,
        captions_file: str = "imagenet_captions.json",
        descriptions_file: str = "class_descriptions.json",
        synset_mapping: str | None = "LOC_synset_mapping.txt",
        split: dict[str, Any] | None = None,
        mode: str = "unweighted",
        relevance_file: str | None = None,
        coefficient: str = "coef",
        filtered: str = "text",
        dropped_weight: float = 1.0,
        image_dir: str = "train",
        check_images: bool = True,
        dataset_dir: str | None = None,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool | float = False,
        text_encoder: str = "bilstm",
        text_vocab_size: int = 1000,
        text_min_freq: int = 1,
        text_max_length: int = 32,
        pool_batches: int = 50,
        **shared: Any,
    ) -> None:
        if mode not in WEIGHTING_MODES:
            raise ValueError(f"mode must be one of {WEIGHTING_MODES}, got {mode!r}")
        if filtered not in FILTERED_PARTS:
            raise ValueError(f"filtered must be one of {FILTERED_PARTS}, got {filtered!r}")
        if mode != "unweighted" and not relevance_file:
            raise ValueError(
                f"mode {mode!r} needs data.relevance_file "
                "(kept_captions.jsonl of experiments.score_relevance)"
            )
        super().__init__(root, **shared)
        self.dataset_dir = Path(dataset_dir) if dataset_dir else self.root / "captioned_images"
        self.transforms = transforms or ImageTransforms()
        self.tokenizer = None
        self.header: dict[str, Any] = {}

    # ------------------------------------------------------------------ preparation (once per node)
    def _index_settings(self) -> dict[str, Any]:
        hp, split = self.hparams, dict(self.hparams.split or {})
        settings = {
            "version": INDEX_VERSION,
            "split": split,
            "image_dir": hp.image_dir,
            "check_images": hp.check_images,
            "sources": release_stamps(self.root / hp.captions_file, self.root / hp.descriptions_file),
        }
        if hp.check_images:
            settings["images"] = folder_stamp(self.root / hp.image_dir)
        return settings

    def _mode_settings(self) -> dict[str, Any]:
        hp = self.hparams
        settings = {
            name: hp[name]
            for name in (
                "mode",
                "coefficient",
                "filtered",
                "dropped_weight",
                "text_encoder",
                "text_vocab_size",
                "text_min_freq",
                "text_max_length",
            )
        }
        if hp.mode != "unweighted":
            settings["relevance_file"] = source_stamp(hp.relevance_file)
        return settings

    def _mode_dir(self, index_build: str) -> Path:
        digest = settings_digest({**self._mode_settings(), "index": index_build})
        return self.dataset_dir / f"{self.hparams.mode}_{digest}"

    def prepare(self) -> None:
        """Build what is missing or stale (returns at once when everything is current)."""
        index_dir = self.dataset_dir / "index"
        header_path = index_dir / "index.json"
        settings = self._index_settings()
        header = json.loads(header_path.read_text()) if header_path.is_file() else {}
        if header.get("settings") != settings:
            header = self._write_index(index_dir, settings)
        mode_dir = self._mode_dir(header["build"])
        if not (mode_dir / "mode.json").is_file():
            self._write_mode(index_dir, mode_dir)

    def _write_index(self, index_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        hp, split = self.hparams, settings["split"]
        descriptions = read_class_descriptions(
            self.root / hp.descriptions_file, split.get("min_sentences", 2)
        )
        mapping = self.root / hp.synset_mapping if hp.synset_mapping else None
        names = read_synset_mapping(mapping) if mapping and mapping.is_file() else {}
        captions = read_imagenet_captions(self.root / hp.captions_file, known_wnids=list(descriptions))
        wnids = sorted({c.wnid for c in captions})
        label = {w: i for i, w in enumerate(wnids)}
        split_settings = ("test_fraction", "seed", "small_class", "min_test_share")  # unset: the defaults
        is_test = split_per_class(
            [c.wnid for c in captions], **{k: split[k] for k in split_settings if k in split}
        )
        image_root = self.root / hp.image_dir
        image_ok = np.ones(len(captions), dtype=bool)
        if hp.check_images:
            image_ok = np.fromiter(
                ((image_root / c.wnid / c.filename).is_file() for c in captions),
                dtype=bool,
                count=len(captions),
            )
            missing = np.flatnonzero(~image_ok)
            if len(missing):
                log.warning(
                    "captioned images: dropped %d caption(s) whose image is missing under %s, e.g. %s",
                    len(missing),
                    image_root,
                    ", ".join(f"{captions[i].wnid}/{captions[i].filename}" for i in missing[:5]),
                )
        index_dir.mkdir(parents=True, exist_ok=True)
        (index_dir / "index.json").unlink(missing_ok=True)  # written last: marks a complete index
        atomic_savez(
            index_dir / "index.npz",
            entry=np.array([c.index for c in captions], dtype=np.int64),
            label=np.array([label[c.wnid] for c in captions], dtype=np.int32),
            is_test=is_test,
            image_ok=image_ok,
        )
        atomic_save_npy(index_dir / "filenames.npy", np.array([c.filename.encode() for c in captions]))
        with_tags = split.get("with_tags", False)
        atomic_write_jsonl(
            index_dir / "texts.jsonl",
            ({"index": c.index, "text": c.text(with_tags)} for c in captions),
            ensure_ascii=False,
        )
        header = {
            "settings": settings,
            "build": settings_digest(settings),
            "classes": wnids,
            "class_names": [(names.get(w) or [w])[0] for w in wnids],
            "counts": {
                "captions": len(captions),
                "train": int((~is_test).sum()),
                "test": int(is_test.sum()),
                "images_missing": int((~image_ok).sum()),
            },
        }
        atomic_write_text(index_dir / "index.json", json.dumps(header, indent=1))
        return header

    def _write_mode(self, index_dir: Path, mode_dir: Path) -> None:
        hp = self.hparams
        index = dict(np.load(index_dir / "index.npz"))
        filenames = np.load(index_dir / "filenames.npy", mmap_mode="r")
        texts = [row["text"] for _, row in read_jsonl(index_dir / "texts.jsonl", "one caption text per line")]
        captions_file = self.root / hp.captions_file
        train = np.flatnonzero(~index["is_test"] & index["image_ok"])
        test = np.flatnonzero(index["is_test"] & index["image_ok"])
        dropped = {
            "train": {"images missing on disk": int((~index["is_test"] & ~index["image_ok"]).sum())},
            "test": {"images missing on disk": int((index["is_test"] & ~index["image_ok"]).sum())},
        }
        weights = np.ones(len(train), dtype=np.float32)
        kept = np.ones(len(train), dtype=bool)  # the train captions that keep their text
        sources = [captions_file]
        if hp.mode != "unweighted":
            coef = self._read_coefficients(Path(hp.relevance_file), index["entry"], filenames, hp.coefficient)
            kept = np.array([int(index["entry"][i]) in coef for i in train], dtype=bool)
            sources.append(Path(hp.relevance_file))
            if hp.filtered == "item":
                dropped["train"]["not kept by the relevance filter"] = int((~kept).sum())
                train, weights, kept = train[kept], weights[kept], kept[kept]
            if hp.mode == "weighted":
                weights = np.array(
                    [coef[int(index["entry"][i])] if k else hp.dropped_weight for i, k in zip(train, kept)],
                    dtype=np.float32,
                )
        train_texts = [texts[i] if k else "" for i, k in zip(train, kept)]
        require_rows(train, "train", *sources, dropped=dropped["train"])
        require_rows(test, "test", captions_file, dropped=dropped["test"])
        tokenizer = build_tokenizer(
            hp.text_encoder,
            [t for t in train_texts if t],
            vocab_size=hp.text_vocab_size,
            min_freq=hp.text_min_freq,
        )
        mode_dir.mkdir(parents=True, exist_ok=True)
        encode_to_arrays(tokenizer, train_texts, hp.text_max_length).save(mode_dir, "train_text")
        encode_to_arrays(tokenizer, [texts[i] for i in test], hp.text_max_length).save(mode_dir, "test_text")
        for name, array in (("train_rows", train), ("test_rows", test), ("train_weights", weights)):
            atomic_save_npy(mode_dir / f"{name}.npy", array)
        meta = {
            "settings": self._mode_settings(),
            "tokenizer": tokenizer.state(),
            "counts": {
                "train": len(train),
                "test": len(test),
                "train_without_text": int(sum(1 for t in train_texts if not t)),
                "train_weight_sum": float(weights.sum()),
                "dropped": dropped,
            },
        }
        atomic_write_text(mode_dir / "mode.json", json.dumps(meta))

    @staticmethod
    def _read_coefficients(
        path: Path, entries: np.ndarray, filenames: np.ndarray, column: str = "coef"
    ) -> dict[int, float]:
        """``{release entry index: coefficient}`` of ``kept_captions.jsonl``; every line must name a
        caption of the release (by ``index``, and by ``filename`` where given) and carry a number in
        ``column``."""
        position = {int(e): k for k, e in enumerate(entries)}
        coef = {}
        for number, row in read_jsonl(
            path, "one {index, filename, coef, ...} object per kept caption (experiments.score_relevance)"
        ):
            index = json_field(row, "index", int, path, number)
            value = json_field(row, column, (int, float), path, number)
            k = position.get(index)
            if k is None or row.get("filename", filenames[k].decode()) != filenames[k].decode():
                raise DatasetFormatError(
                    path,
                    f"caption {index} ({row.get('filename')}) is not in the captions file; rescore it with "
                    "this release",
                    line=number,
                    field="index",
                )
            coef[index] = float(value)
        return coef

    # ------------------------------------------------------------------ setup (every process)
    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        self.prepare()  # at once when prepare_data ran; a notebook or test may call setup alone
        hp = self.hparams
        index_dir = self.dataset_dir / "index"
        self.header = json.loads((index_dir / "index.json").read_text())
        mode_dir = self._mode_dir(self.header["build"])
        meta = json.loads((mode_dir / "mode.json").read_text())
        self.tokenizer = tokenizer_from_state(meta["tokenizer"])
        labels = np.load(index_dir / "index.npz")["label"]
        filenames = np.load(index_dir / "filenames.npy", mmap_mode="r")
        image_root = self.root / hp.image_dir

        def make(split: str, weights: np.ndarray | None, transform) -> CaptionedImages:
            rows = np.load(mode_dir / f"{split}_rows.npy")
            texts = TokenizedTexts(TokenArrays.load(mode_dir, f"{split}_text"), labels[rows], weights)
            return CaptionedImages(
                image_root, self.header["classes"], filenames[rows], texts, transform, hp.cache_decoded
            )

        counts = meta["counts"]
        self.data_train = make("train", np.load(mode_dir / "train_weights.npy"), self.transforms.train())
        self.data_test = make("test", np.ones(counts["test"], dtype=np.float32), self.transforms.eval())
        self.data_val = self.data_test  # as the relevance classifier: the test split every epoch
        log.info(
            "captioned images (%s): %d train (%d without text, weight sum %.1f) / %d test",
            hp.mode,
            counts["train"],
            counts["train_without_text"],
            counts["train_weight_sum"],
            counts["test"],
        )

    # ------------------------------------------------------------------ what the model and export need
    def info(self) -> DataInfo:
        return DataInfo(
            label_names=list(self.header["classes"]),
            num_train=len(self.data_train),
            vocab_size=len(self.tokenizer),
            pad_id=self.tokenizer.pad_id,
            image_pipeline=self.transforms.describe(),
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "imagenet_captions_images",
            "label_names": list(self.header.get("classes", [])),
            "class_names": list(self.header.get("class_names", [])),
            "text": {**self.tokenizer.state(), "max_length": self.hparams.text_max_length},
            "transforms": self.transforms.describe(),
        }
