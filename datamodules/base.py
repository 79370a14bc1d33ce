"""What every DataModule of the suite shares: the shared arguments, the synthetic twin, DDP-aware
loaders, what the model needs to know about the data (:class:`DataInfo`) and image decoding.

The contract (see CONTRIBUTING.md, "Adding a model"). A DataModule subclass:

* takes its dataset's own arguments and passes ``**shared`` (batch size, workers, pin memory, epoch
  fraction, split seed, synthetic twin) to :class:`SuiteDataModule`, which saves every argument as
  a hyperparameter; ``__init__`` reads no file;
* names its twin's writer in ``synthetic_writer`` (``prepare_data`` generates the twin) and does
  its one-time work on disk (indexes, tokenizers) in :meth:`~SuiteDataModule.prepare`;
* in ``setup`` fills ``data_train`` / ``data_val`` / ``data_test`` and returns what the model needs
  from :meth:`~SuiteDataModule.info`;
* changes batching through :meth:`~SuiteDataModule.collate_fn` and
  :meth:`~SuiteDataModule.batch_sampler`, never by writing its own loaders.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from lightning import LightningDataModule
from lightning.fabric.utilities.seed import pl_worker_init_function
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from datamodules.errors import DatasetFormatError
from datamodules.samplers import EpochFractionSampler, EvalSampler

log = logging.getLogger(__name__)

#: Lightning hooks that :class:`SuiteDataModule` implements for every dataset.
OWNED_HOOKS = ("prepare_data", "train_dataloader", "val_dataloader", "test_dataloader")


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data, published by a DataModule after ``setup``.

    The runner (:func:`experiments.stages.link_data`) copies the fields a model config names in its
    ``data_links`` into the model's arguments before building it, as LightningCLI's
    ``link_arguments(apply_on="instantiate")`` does; the resolved config then holds the values.

    Attributes:
        label_names: the classes of a single-task model, or the labels of a multi-label one.
        tag_names: NUS-WIDE's user tags (the tag branch's inputs).
        tasks: multi-task data: ``{task: its class names}``.
        task_positives: training samples of each task whose label is not its negative class.
        num_train: training samples.
        vocab_size, pad_id: the tokenizer's.
        extra_vocab_size: the vocabulary of a third modality's ids (CrisisMMD's events / hashtags).
        image_pipeline: the image pipeline (``resize``, ``crop``, ``mean``, ``std``; ``k`` when augmented).
        feature_fingerprints: precomputed frozen-encoder features: ``{modality: weights digest}``.
    """

    label_names: list[str] = field(default_factory=list)
    tag_names: list[str] = field(default_factory=list)
    tasks: dict[str, list[str]] = field(default_factory=dict)
    task_positives: dict[str, int] = field(default_factory=dict)
    num_train: int = 0
    vocab_size: int | None = None
    pad_id: int = 0
    extra_vocab_size: int | None = None
    image_pipeline: dict[str, Any] = field(default_factory=dict)
    feature_fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_tags(self) -> int:
        return len(self.tag_names)

    @property
    def task_sizes(self) -> dict[str, int]:
        return {task: len(names) for task, names in self.tasks.items()}


#: Blocks of at least this size are mmapped by glibc's malloc (its initial default, held fixed).
MMAP_THRESHOLD = 128 * 1024


@functools.cache
def fix_mmap_threshold() -> bool:
    """Hold glibc's mmap threshold at its initial 128 KiB so that freed image tensors go back to the OS.

    glibc raises the threshold to the size of any mmapped block that is freed (up to 32 MiB), so after
    the first image-sized tensor (3 MiB at 512 px) every later one comes from the heap, which keeps the
    freed memory: a loader worker assembling 48-image batches at 512 px grew to 543 MB of private
    memory over a full SUN397 pass, 20 MB with the threshold fixed (``python -m experiments.bench
    scale``). Returns whether it was set (glibc only; an explicit ``MALLOC_MMAP_THRESHOLD_`` wins).

    Loader workers only (:func:`loader_worker_init`): in the training process every activation-sized
    tensor would become a fresh mmap, page faults included (a step of the tagger's CNN took 1.7x as long).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(-3, MMAP_THRESHOLD))  # M_MMAP_THRESHOLD


def loader_worker_init(worker_id: int, rank: int = 0) -> None:
    """``worker_init_fn`` of every loader: the fixed mmap threshold, then Lightning's per-worker seeding
    when ``seed_everything(workers=True)`` asked for it (Lightning adds its own only where none is set)."""
    fix_mmap_threshold()
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank=rank)


class SuiteDataModule(LightningDataModule):
    """Base class of the suite's DataModules.

    Args:
        root: the dataset's folder, in its publisher's layout (or where the twin is generated).
        batch_size, num_workers: per process.
        pin_memory: ``"auto"`` pins when the trainer runs on a GPU.
        epoch_fraction: the share of the training split one epoch draws, fresh every epoch (above 1:
            several passes).
        split_seed: seed of carved validation splits and of the per-epoch draws.
        synthetic: ``None`` for real data, else the keyword arguments of ``synthetic_writer``.

    The samplers are DDP-aware themselves (:mod:`datamodules.samplers`; the trainer configs set
    ``use_distributed_sampler: false``): training draws a fresh seeded share every epoch, split
    across ranks; evaluation sees every sample exactly once across ranks.
    """

    #: Dotted name of ``writer(root, **synthetic)``, which generates the synthetic twin into ``root``
    #: (once, atomically). A name, not the function: the twin imports its reader's constants, so
    #: the reader's module does not import the twin.
    synthetic_writer: ClassVar[str | None] = None

    data_train: Dataset | None = None
    data_val: Dataset | None = None
    data_test: Dataset | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in OWNED_HOOKS if name in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {overridden}, which SuiteDataModule owns; implement "
                "prepare / collate_fn / batch_sampler instead (datamodules/base.py)"
            )

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        epoch_fraction: float = 1.0,
        split_seed: int = 0,
        synthetic: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Collects the arguments of every __init__ in the subclass chain (Lightning walks the frames);
        # objects such as the image pipeline are not hyperparameters.
        self.save_hyperparameters(logger=False, ignore=["transforms"])
        self.root = Path(root)

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Generate the synthetic twin (when configured), then :meth:`prepare`. Lightning calls this
        on one process per node; the runner calls it before building the model as well, so
        :meth:`prepare` must return at once when its results on disk are current."""
        if self.hparams.synthetic is not None:
            if self.synthetic_writer is None:
                raise ValueError(f"{type(self).__name__} has no synthetic twin; set data.synthetic=null")
            module, _, name = self.synthetic_writer.rpartition(".")
            getattr(importlib.import_module(module), name)(self.root, **self.hparams.synthetic)
        self.prepare()

    def prepare(self) -> None:
        """One-time work on disk (indexes, tokenizers): done once, loaded by every rank in ``setup``."""

    def info(self) -> DataInfo:
        """What the model needs to know about the data (after ``setup``)."""
        return DataInfo()

    def export_metadata(self) -> dict[str, Any]:
        """What a predictor needs besides the weights (label names, preprocessing), after ``setup``."""
        return {}

    # ------------------------------------------------------------------ loaders
    def collate_fn(self, split: str) -> Callable[[list[Any]], Any] | None:
        """The loaders' ``collate_fn`` (``None``: PyTorch's default); ``split`` is train/val/test."""
        return None

    def batch_sampler(
        self, sampler: Sampler[int], dataset: Dataset, split: str
    ) -> Iterable[list[int]] | None:
        """Batches from this split's index sampler (``None``: fixed-size batches in sampler order).
        The sampler is already this rank's share, so a batch sampler built on it is DDP-aware."""
        return None

    def train_epoch_fraction(self) -> float:
        """The share of ``data_train`` one training epoch draws (``epoch_fraction``)."""
        return self.hparams.epoch_fraction

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(
        self, dataset: Dataset, sampler: EpochFractionSampler | EvalSampler, split: str
    ) -> DataLoader:
        pin = self.hparams.pin_memory
        if pin == "auto":
            pin = self.trainer is not None and type(self.trainer.accelerator).__name__ == "CUDAAccelerator"
        workers = self.hparams.num_workers
        init = functools.partial(loader_worker_init, rank=self._replicas()[1]) if workers else None
        batches = self.batch_sampler(sampler, dataset, split)
        batching = (
            {"batch_sampler": batches}
            if batches is not None
            else {"batch_size": self.hparams.batch_size, "sampler": sampler}
        )
        return DataLoader(
            dataset,
            collate_fn=self.collate_fn(split),
            num_workers=workers,
            pin_memory=bool(pin),
            persistent_workers=workers > 0,
            worker_init_fn=init,
            generator=sampler.loader_generator,
            **batching,
        )

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
        return self._loader(self.data_train, sampler, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, EvalSampler(len(self.data_val), *self._replicas()), "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, EvalSampler(len(self.data_test), *self._replicas()), "test")


def image_is_readable(path: Path) -> bool:
    """A cheap check of an image file for index time (no pixel decoding: too slow for 100k images).

    Caught: a file that is not an image, a damaged header, and a JPEG cut short (an interrupted
    download or extraction: PIL's ``verify()`` parses the headers but not JPEG pixel data, so the
    end-of-image marker ``FF D9`` is looked for in the last KiB). Not caught: damage inside the
    compressed data of a complete JPEG; PIL decodes such a file without an error, as a partly
    garbled picture, so no decoder-based check finds it either. A file whose decoding fails later
    raises a :class:`DatasetFormatError` naming it (:class:`DecodedImages`).
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


#: The decoded-image cache of ``cache_decoded: true``, per process (each loader worker has its own).
DEFAULT_CACHE_MB = 1024


class DecodedImages:
    """Opens images as RGB, optionally keeping decoded uint8 pixels in memory.

    ``cache``: ``False``/``0`` (off: the default of every real dataset), ``True`` (up to
    :data:`DEFAULT_CACHE_MB` MB) or a budget in MB. The cache lives in each process that reads the
    data (every DataLoader worker holds its own copy), so the memory it takes is the budget times the
    workers. When the budget is reached, later images are decoded on every read and a warning says
    so once: a real dataset never fills memory through this cache (ImageNet's 357k training photos at
    ~0.55 MB each would need ~190 GB per worker).
    """

    def __init__(self, cache: bool | float = False) -> None:
        budget_mb = DEFAULT_CACHE_MB if cache is True else float(cache or 0)
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self._pixels: dict[int, np.ndarray] = {}
        self._warned = False

    def load(self, i: int, path: Path) -> Image.Image:
        pixels = self._pixels.get(i)
        if pixels is not None:
            return Image.fromarray(pixels)
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DatasetFormatError(
                path,
                f"cannot read image ({err}); replace the file with a good copy, or delete it and "
                "rerun: readers drop and count missing images (delete the dataset's index file, "
                "e.g. nuswide_index.bin or sun397_index.npz, if it is not rebuilt by itself)",
            ) from err
        if self.budget:
            self._keep(i, np.asarray(image))
        return image

    def _keep(self, i: int, pixels: np.ndarray) -> None:
        if self.used + pixels.nbytes <= self.budget:
            self._pixels[i] = pixels
            self.used += pixels.nbytes
        elif not self._warned:
            self._warned = True
            log.warning(
                "decoded-image cache full (%d images, %.0f MB of a %.0f MB budget per process): the other "
                "images are decoded on every read; raise data.cache_decoded (MB) if memory allows, or set "
                "it to false",
                len(self._pixels),
                self.used / 2**20,
                self.budget / 2**20,
            )
