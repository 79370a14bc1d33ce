"""What every DataModule of the suite shares: DDP-aware loaders and image decoding with an optional
in-memory cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datamodules.errors import DatasetFormatError
from datamodules.samplers import EpochFractionSampler, EvalSampler


class DecodedImages:
    """Opens images as RGB; with ``cache`` keeps the decoded uint8 pixels of item ``i`` in memory
    (small datasets such as the synthetic twins; the cache lives per worker process)."""

    def __init__(self, size: int, cache: bool = False) -> None:
        self._pixels: list[np.ndarray | None] | None = [None] * size if cache else None

    def load(self, i: int, path: Path) -> Image.Image:
        if self._pixels is not None and self._pixels[i] is not None:
            return Image.fromarray(self._pixels[i])
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError) as err:
            raise DatasetFormatError(path, f"cannot read image ({err}); rebuild the index to drop it") from err
        if self._pixels is not None:
            self._pixels[i] = np.asarray(image)
        return image


class SuiteDataModule(LightningDataModule):
    """Loaders for ``self.data_train`` / ``data_val`` / ``data_test`` from the hyperparameters
    ``batch_size``, ``num_workers``, ``pin_memory`` (``"auto"``: on when training on a GPU),
    ``epoch_fraction`` and ``split_seed``.

    The samplers are DDP-aware themselves (see :mod:`datamodules.samplers`): training draws a fresh
    seeded share of the data every epoch, evaluation sees every sample exactly once across ranks.
    """

    data_train: Dataset | None = None
    data_val: Dataset | None = None
    data_test: Dataset | None = None

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, sampler: EpochFractionSampler | EvalSampler) -> DataLoader:
        pin = self.hparams.pin_memory
        if pin == "auto":
            pin = self.trainer is not None and type(self.trainer.accelerator).__name__ == "CUDAAccelerator"
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=bool(pin), persistent_workers=workers > 0, generator=sampler.loader_generator)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._replicas()
        sampler = EpochFractionSampler(len(self.data_train), self.hparams.epoch_fraction, shuffle=True,
                                       seed=self.hparams.split_seed, num_replicas=world, rank=rank)
        return self._loader(self.data_train, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, EvalSampler(len(self.data_val), *self._replicas()))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, EvalSampler(len(self.data_test), *self._replicas()))
