"""ImageNet-Captions images + captions for a classifier trained with relevance weights (seed 000's use
of the filter's coefficients)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Sampler

from datamodules.base import DataInfo, DecodedImages, SuiteDataModule
from datamodules.errors import DatasetFormatError, json_field, read_jsonl, require_rows
from datamodules.imagenet_captions.reader import (
    Caption,
    read_class_descriptions,
    read_imagenet_captions,
    read_synset_mapping,
    split_per_class,
)
from datamodules.preprocessing.images import ImageTransforms
from datamodules.preprocessing.text import build_tokenizer
from datamodules.samplers import LengthGroupedBatchSampler
from datamodules.text_batches import ImageCaptionCollate, TokenizedTexts, tokenize_texts

log = logging.getLogger(__name__)

WEIGHTING_MODES = ("unweighted", "weighted", "drop")


class CaptionedImages(Dataset):
    """Image (``<image_root>/<wnid>/<filename>``), caption token ids, label and loss weight per item."""

    def __init__(
        self,
        image_root: Path,
        captions: Sequence[Caption],
        texts: TokenizedTexts,
        transform=None,
        cache_decoded: bool = False,
    ) -> None:
        self.image_root, self.captions, self.texts, self.transform = (
            Path(image_root),
            list(captions),
            texts,
            transform,
        )
        self.images = DecodedImages(len(self.captions), cache=cache_decoded)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        caption = self.captions[i]
        image = self.images.load(i, self.image_root / caption.wnid / caption.filename)
        return {**self.texts[i], "image": self.transform(image) if self.transform else image}

    @property
    def lengths(self) -> list[int]:
        return self.texts.lengths


class CaptionedImagesDataModule(SuiteDataModule):
    """ImageNet-Captions images + captions for a classifier trained with relevance weights.

    The captions are split per class as the relevance dataset (the same ``split`` settings and seed,
    all captions); ``mode`` says what the training split uses from ``relevance_file``
    (``kept_captions.jsonl`` of ``experiments.score_relevance``): ``unweighted`` every caption with
    weight 1; ``drop`` only the kept captions, weight 1; ``weighted`` only the kept captions,
    weighted by their coefficient. The test split is the same in every mode (every test caption,
    weight 1), so the three are comparable. Caption tokens come from the tokenizer of
    ``text_encoder`` built on the training captions. With ``check_images`` captions whose image is
    missing are dropped after the split (counted, logged).

    Args:
        root, captions_file, descriptions_file, synset_mapping: the release (as the relevance data).
        split: ``test_fraction``, ``seed``, ``small_class``, ``min_test_share`` of
            :func:`~datamodules.imagenet_captions.reader.split_per_class`; ``min_sentences``: the
            class-description check; ``with_tags``: the caption text.
        mode, relevance_file: see above.
        image_dir: the images' folder under ``root`` (ImageNet's ``train`` layout).
        transforms: an :class:`~datamodules.preprocessing.images.ImageTransforms`.
        cache_decoded: keep decoded images in memory (small datasets only).
        text_encoder, text_vocab_size, text_min_freq, text_max_length, pool_batches: the captions' tokens.
        **shared: see :class:`~datamodules.base.SuiteDataModule`.
    """

    synthetic_writer = "datamodules.synthetic.imagenet_captions.ensure_imagenet_captions"

    def __init__(
        self,
        root: str,
        captions_file: str = "imagenet_captions.json",
        descriptions_file: str = "class_descriptions.json",
        synset_mapping: str | None = "LOC_synset_mapping.txt",
        split: dict[str, Any] | None = None,
        mode: str = "unweighted",
        relevance_file: str | None = None,
        image_dir: str = "train",
        check_images: bool = True,
        transforms: ImageTransforms | None = None,
        cache_decoded: bool = False,
        text_encoder: str = "bilstm",
        text_vocab_size: int = 1000,
        text_min_freq: int = 1,
        text_max_length: int = 32,
        pool_batches: int = 50,
        **shared: Any,
    ) -> None:
        if mode not in WEIGHTING_MODES:
            raise ValueError(f"mode must be one of {WEIGHTING_MODES}, got {mode!r}")
        if mode != "unweighted" and not relevance_file:
            raise ValueError(
                f"mode {mode!r} needs data.relevance_file (kept_captions.jsonl of experiments.score_relevance)"
            )
        super().__init__(root, **shared)
        self.transforms = transforms or ImageTransforms()
        self.tokenizer = None
        self.header: dict[str, Any] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        hp, split = self.hparams, self.hparams.split or {}
        descriptions = self.root / hp.descriptions_file
        wnids = sorted(read_class_descriptions(descriptions, split.get("min_sentences", 2)))
        mapping = self.root / hp.synset_mapping if hp.synset_mapping else None
        names = read_synset_mapping(mapping) if mapping and mapping.is_file() else {}
        self.header = {"classes": wnids, "class_names": [(names.get(w) or [w])[0] for w in wnids]}
        captions_file = self.root / hp.captions_file
        captions = read_imagenet_captions(captions_file, known_wnids=wnids)
        is_test = split_per_class(
            [c.wnid for c in captions],
            split.get("test_fraction", 0.23),
            split.get("seed", 0),
            split.get("small_class", 100),
            split.get("min_test_share", 0.2),
        )
        train = [c for c, t in zip(captions, is_test) if not t]
        test = [c for c, t in zip(captions, is_test) if t]
        image_root = self.root / hp.image_dir
        sources, dropped = [captions_file], {"train": {}, "test": {}}
        if hp.mode != "unweighted":
            coef = self._read_coefficients(Path(hp.relevance_file), {c.index: c for c in captions})
            dropped["train"]["not kept by the relevance filter"] = sum(c.index not in coef for c in train)
            train = [c for c in train if c.index in coef]
            sources.append(Path(hp.relevance_file))
        if hp.check_images:
            missing = {
                c.index: f"{c.wnid}/{c.filename}"
                for c in train + test
                if not (image_root / c.wnid / c.filename).is_file()
            }
            if missing:
                log.warning(
                    "captioned images: dropped %d caption(s) whose image is missing under %s, e.g. %s",
                    len(missing),
                    image_root,
                    ", ".join(list(missing.values())[:5]),
                )
            for name, part in (("train", train), ("test", test)):
                dropped[name]["images missing on disk"] = sum(c.index in missing for c in part)
            train = [c for c in train if c.index not in missing]
            test = [c for c in test if c.index not in missing]
        require_rows(train, "train", *sources, dropped=dropped["train"])
        require_rows(test, "test", sources[0], dropped=dropped["test"])
        weights = [coef[c.index] for c in train] if hp.mode == "weighted" else [1.0] * len(train)
        with_tags = split.get("with_tags", False)
        self.tokenizer = build_tokenizer(
            hp.text_encoder,
            [c.text(with_tags) for c in train],
            vocab_size=hp.text_vocab_size,
            min_freq=hp.text_min_freq,
        )
        label = {w: i for i, w in enumerate(wnids)}

        def make(items: list[Caption], item_weights: list[float], transform) -> CaptionedImages:
            ids = tokenize_texts(self.tokenizer, [c.text(with_tags) for c in items], hp.text_max_length)
            tokens = TokenizedTexts(ids, [label[c.wnid] for c in items], item_weights)
            return CaptionedImages(image_root, items, tokens, transform, hp.cache_decoded)

        self.data_train = make(train, weights, self.transforms.train())
        self.data_test = make(test, [1.0] * len(test), self.transforms.eval())
        self.data_val = self.data_test  # as the relevance classifier: the test split every epoch
        log.info(
            "captioned images (%s): %d train (weight sum %.1f) / %d test",
            hp.mode,
            len(train),
            sum(weights),
            len(test),
        )

    @staticmethod
    def _read_coefficients(path: Path, captions: Mapping[int, Caption]) -> dict[int, float]:
        """``{caption index: coefficient}`` of ``kept_captions.jsonl``; every line must name a caption
        of the release (by ``index``, and by ``filename`` where given) and carry a number ``coef``."""
        coef = {}
        for number, row in read_jsonl(
            path,
            "one {index, filename, coef, ...} object per kept caption (python -m experiments.score_relevance)",
        ):
            index = json_field(row, "index", int, path, number)
            value = json_field(row, "coef", (int, float), path, number)
            caption = captions.get(index)
            if caption is None or row.get("filename", caption.filename) != caption.filename:
                raise DatasetFormatError(
                    path,
                    f"caption {index} ({row.get('filename')}) is not in the captions file; rescore it with "
                    "this release",
                    line=number,
                    field="index",
                )
            coef[index] = float(value)
        return coef

    # ------------------------------------------------------------------ batching
    def collate_fn(self, split: str) -> ImageCaptionCollate:
        return ImageCaptionCollate(self.tokenizer.pad_id)

    def batch_sampler(self, sampler: Sampler[int], dataset: Dataset, split: str) -> LengthGroupedBatchSampler:
        return LengthGroupedBatchSampler(
            sampler,
            dataset.lengths,
            self.hparams.batch_size,
            self.hparams.pool_batches,
            shuffle=split == "train",
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
