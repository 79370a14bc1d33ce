"""The relevance classifier's DataModule (seed 000): caption + class-sentence items of the relevance
training set (:mod:`datamodules.imagenet_captions.relevance_dataset`), tokenised, length-grouped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Sampler

from datamodules.base import DataInfo, SuiteDataModule
from datamodules.errors import read_json_header
from datamodules.imagenet_captions.relevance_dataset import (
    ITEMS_FILE,
    read_relevance_dataset,
    write_relevance_dataset,
)
from datamodules.preprocessing.text import build_tokenizer
from datamodules.samplers import LengthGroupedBatchSampler
from datamodules.text_batches import PadCollate, TokenizedTexts, tokenize_texts

log = logging.getLogger(__name__)


class RelevanceDataModule(SuiteDataModule):
    """Caption + class-sentence items for the relevance classifier (seed 000).

    ``prepare`` builds the relevance dataset (:func:`write_relevance_dataset`) into ``dataset_dir``
    when it is missing or was built from other files or settings. ``setup`` reads it, builds the
    tokenizer of ``text_encoder`` (the offline ``roberta_small`` trains a byte-level BPE on the
    training texts) and tokenises every item once.

    Evaluation: the seed has no validation set; it evaluates the test set after every epoch to watch
    over-fitting. Here the validation loader *is* the test set (``val/top1`` is the seed's per-epoch
    test curve); the final ``test/`` scores are on the same items, so they are not a held-out estimate
    of a model selected on them: the seed's protocol, and the filter uses the last model anyway.

    Args:
        root: the release folder (``captions_file``, ``descriptions_file``, ``synset_mapping`` inside).
        dataset_dir: where the built dataset lives (default ``<root>/relevance_dataset``).
        build: keyword arguments of :func:`write_relevance_dataset` (split, sentence counts, seed).
        text_encoder, text_vocab_size, text_min_freq, text_max_length: the tokenizer.
        pool_batches: batches per length-sorted pool (:class:`LengthGroupedBatchSampler`).
        **shared: see :class:`~datamodules.base.SuiteDataModule` (``synthetic``: the arguments of
            :func:`datamodules.synthetic.imagenet_captions.ensure_imagenet_captions`).
    """

    synthetic_writer = "datamodules.synthetic.imagenet_captions.ensure_imagenet_captions"

    def __init__(
        self,
        root: str,
        captions_file: str = "imagenet_captions.json",
        descriptions_file: str = "class_descriptions.json",
        synset_mapping: str | None = "LOC_synset_mapping.txt",
        dataset_dir: str | None = None,
        build: dict[str, Any] | None = None,
        text_encoder: str = "roberta_small",
        text_vocab_size: int = 2000,
        text_min_freq: int = 2,
        text_max_length: int = 64,
        pool_batches: int = 50,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.dataset_dir = Path(dataset_dir) if dataset_dir else self.root / "relevance_dataset"
        self.tokenizer = None
        self.header: dict[str, Any] = {}

    def source(self, name: str) -> Path | None:
        value = self.hparams[name]
        return None if not value else (self.root / value)

    def prepare(self) -> None:
        if not self._dataset_is_current():
            mapping = self.source("synset_mapping")
            write_relevance_dataset(
                self.source("captions_file"),
                self.source("descriptions_file"),
                self.dataset_dir,
                synset_mapping=mapping if mapping and mapping.is_file() else None,
                **(self.hparams.build or {}),
            )

    def _dataset_is_current(self) -> bool:
        path = self.dataset_dir / ITEMS_FILE
        if not path.is_file():
            return False
        header = read_json_header(path)  # a broken one raises, naming the file and line 1
        built_from = header.get("sources", {})
        if not all(self.source(n).is_file() for n in ("captions_file", "descriptions_file")):
            return False  # rebuilding reports the missing file
        newest_source = max(self.source(n).stat().st_mtime for n in ("captions_file", "descriptions_file"))
        build = self.hparams.build or {}
        same_settings = all(header.get("settings", {}).get(k) == v for k, v in build.items())
        return (
            built_from.get("captions") == str(self.source("captions_file").resolve())
            and same_settings
            and path.stat().st_mtime >= newest_source
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        hp = self.hparams
        self.header, splits = read_relevance_dataset(self.dataset_dir)
        self.tokenizer = build_tokenizer(
            hp.text_encoder,
            (it["text"] for it in splits["train"]),
            vocab_size=hp.text_vocab_size,
            min_freq=hp.text_min_freq,
        )
        # Items are "caption + class sentence": a text over the token budget loses the start of its
        # caption, never the class sentence at its end.
        self.data_train, self.data_test = (
            TokenizedTexts(
                tokenize_texts(self.tokenizer, [it["text"] for it in splits[s]], hp.text_max_length, True),
                [it["label"] for it in splits[s]],
            )
            for s in ("train", "test")
        )
        self.data_val = self.data_test  # the seed's per-epoch test evaluation (see the class docstring)
        log.info(
            "relevance dataset: %d train / %d test items, %d classes, tokenizer of %d tokens",
            len(self.data_train),
            len(self.data_test),
            len(self.header.get("classes", [])),
            len(self.tokenizer),
        )

    # ------------------------------------------------------------------ batching
    def collate_fn(self, split: str) -> PadCollate:
        return PadCollate(self.tokenizer.pad_id)

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
        )

    def export_metadata(self) -> dict[str, Any]:
        return {
            "dataset": "imagenet_captions",
            "label_names": list(self.header.get("classes", [])),
            "class_names": list(self.header.get("class_names", [])),
            "with_tags": self.header.get("with_tags", False),
            "text": {**self.tokenizer.state(), "max_length": self.hparams.text_max_length},
        }
