"""The relevance classifier's DataModule (seed 000): caption + class-sentence items of the relevance
training set (:mod:`datamodules.imagenet_captions.relevance_dataset`), tokenised once, memory-mapped,
length-grouped."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datamodules.base import DataInfo, SuiteDataModule
from datamodules.imagenet_captions.relevance_dataset import (
    dataset_is_current,
    load_relevance_splits,
    token_settings,
    tokens_are_current,
    write_relevance_dataset,
    write_relevance_tokens,
)
from datamodules.text_batches import LengthGroupedBatches

log = logging.getLogger(__name__)


class RelevanceDataModule(LengthGroupedBatches, SuiteDataModule):
    """Caption + class-sentence items for the relevance classifier (seed 000).

    ``prepare`` (once per node) builds the relevance dataset (:func:`write_relevance_dataset`) into
    ``dataset_dir`` when it is missing or was built from other files or settings, then tokenises its
    captions and class sentences once each (:func:`write_relevance_tokens`; the offline
    ``roberta_small`` trains its byte-level BPE there, once). ``setup`` (every process) memory-maps
    the token arrays and the items' index triples: an item is joined from its caption and class
    sentence when it is read, the class sentence kept whole and the caption cut at ``truncate``'s side
    when the two exceed ``text_max_length``.

    Evaluation: the seed has no validation set; it evaluates the test set after every epoch to watch
    over-fitting. Here the validation loader *is* the test set (``val/top1`` is the seed's per-epoch
    test curve); the final ``test/`` scores are on the same items, so they are not a held-out estimate
    of a model selected on them: the seed's protocol, and the filter uses the last model anyway.

    Args:
        root: the release folder (``captions_file``, ``descriptions_file``, ``synset_mapping`` inside).
        dataset_dir: where the built dataset lives (default ``<root>/relevance_dataset``).
        build: keyword arguments of :func:`write_relevance_dataset` (split, sentence counts and chunk
            size, seed).
        text_encoder, text_vocab_size, text_min_freq, text_max_length: the tokenizer.
        truncate: ``start`` (a caption over the budget loses its start) or ``end``; the exported
            model scores captions with the same rule.
        pool_batches: batches per length-sorted pool
            (:class:`~datamodules.samplers.LengthGroupedBatchSampler`).
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
        truncate: str = "start",
        pool_batches: int = 50,
        **shared: Any,
    ) -> None:
        super().__init__(root, **shared)
        self.dataset_dir = Path(dataset_dir) if dataset_dir else self.root / "relevance_dataset"
        self.token_settings = token_settings(
            text_encoder, text_vocab_size, text_min_freq, text_max_length, truncate
        )
        self.tokenizer = None
        self.header: dict[str, Any] = {}

    def source(self, name: str) -> Path | None:
        value = self.hparams[name]
        return None if not value else (self.root / value)

    def prepare(self) -> None:
        """Build what is missing or stale (returns at once when everything is current)."""
        build = self.hparams.build or {}
        captions, descriptions = self.source("captions_file"), self.source("descriptions_file")
        if not dataset_is_current(self.dataset_dir, captions, descriptions, build):
            mapping = self.source("synset_mapping")
            mapping = mapping if mapping and mapping.is_file() else None  # class names are optional
            write_relevance_dataset(captions, descriptions, self.dataset_dir, synset_mapping=mapping, **build)
        if not tokens_are_current(self.dataset_dir, self.token_settings):
            write_relevance_tokens(self.dataset_dir, self.token_settings)

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        self.prepare()  # at once when prepare_data ran; a notebook or test may call setup alone
        self.header, self.tokenizer, splits = load_relevance_splits(self.dataset_dir, self.token_settings)
        self.data_train, self.data_test = splits["train"], splits["test"]
        self.data_val = self.data_test  # the seed's per-epoch test evaluation (see the class docstring)
        log.info(
            "relevance dataset: %d train / %d test items, %d classes, tokenizer of %d tokens",
            len(self.data_train),
            len(self.data_test),
            len(self.header["classes"]),
            len(self.tokenizer),
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
            "text": {
                **self.tokenizer.state(),
                "max_length": self.hparams.text_max_length,
                "truncate": self.hparams.truncate,
            },
        }
