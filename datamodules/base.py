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


def image_is_readable(path: Path) -> bool:
    """A cheap check of an image file for index/setup time (no pixel decoding: too slow for 100k images).

    PIL's ``verify()`` parses the headers (and the chunk checksums of a PNG) but not JPEG pixel data, so
    a JPEG cut short (an interrupted download or extraction) passes it; such a file lacks the end-of-image
    marker ``FF D9``, looked for in its last KiB. Damage inside a complete file is only found when the
    image is decoded, where :class:`DecodedImages` raises a :class:`DatasetFormatError` naming the file.
    """
    try:
        with open(path, "rb") as f:
            with Image.open(f) as img:
                is_jpeg = img.format in ("JPEG", "MPO")  # MPO: a camera JPEG with extra frames
                img.verify()
            if is_jpeg:
                f.seek(max(0, f.seek(0, 2) - 1024))
                return b"\xff\xd9" in f.read()
        return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


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
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DatasetFormatError(
                path,
                f"cannot read image ({err}); replace the file with a good copy, or "
                "delete it and rerun: readers drop and count missing images (delete "
                "a cached index, e.g. NUS-WIDE's index.ndjson, so it is rebuilt)",
            ) from err
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
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=bool(pin),
            persistent_workers=workers > 0,
            generator=sampler.loader_generator,
        )

    def train_epoch_fraction(self) -> float:
        """The share of ``data_train`` one training epoch draws (``epoch_fraction``; above 1: several passes)."""
        return self.hparams.epoch_fraction

    def train_dataloader(self) -> DataLoader:
        world, rank = self._replicas()
        sampler = EpochFractionSampler(
            len(self.data_train),
            self.train_epoch_fraction(),
            shuffle=True,
            seed=self.hparams.split_seed,
            num_replicas=world,
            rank=rank,
        )
        return self._loader(self.data_train, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, EvalSampler(len(self.data_val), *self._replicas()))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, EvalSampler(len(self.data_test), *self._replicas()))
