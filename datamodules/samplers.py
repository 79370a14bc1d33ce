"""Samplers that know about DDP themselves: the trainer configs set
``use_distributed_sampler: false``, so Lightning leaves every loader as the DataModule built it.

The index samplers subclass ``DistributedSampler`` and take ``num_replicas``/``rank`` explicitly:

* :class:`EpochFractionSampler` (training): every epoch draws a fresh random ``fraction`` of the
  dataset (the seed's "an epoch is 20 % of the data, reshuffled every epoch"), seeded by
  ``(seed, epoch)`` so a resumed run draws the same subsets, then splits it across ranks. A
  ``fraction`` above 1 makes an epoch several passes, each a fresh permutation (a pairs-only baseline
  given as many steps as a model that trains on every image).
* :class:`EvalSampler` (validation/test/predict): every sample exactly once across ranks, in
  order, rank ``r`` taking indices ``r, r + R, r + 2R, ...``. No padding: the last ranks may get one
  sample fewer, so metrics equal single-process metrics. Metric states are synced at epoch end
  (torchmetrics), never per step, so uneven batch counts across ranks are safe.

Both carry a ``loader_generator`` to hand to their ``DataLoader``: a DataLoader draws its workers'
base seed from the global torch RNG when an iterator is created unless it has a generator of its
own, and Lightning creates the first epoch's iterator at a different moment than the others', so
without it a resumed run would not repeat the uninterrupted run's dropout masks. The training
sampler reseeds it from ``(seed, epoch, rank)`` in :meth:`~EpochFractionSampler.set_epoch`.

:class:`LengthGroupedBatchSampler` groups one rank's indices into batches of similar length; every
rank gets the same number of batches (its index sampler gives every rank the same share).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler


class EpochFractionSampler(DistributedSampler):
    def __init__(
        self,
        dataset_size: int,
        fraction: float = 1.0,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not fraction > 0.0:
            raise ValueError(f"fraction must be positive, got {fraction}")
        if dataset_size <= 0:  # readers refuse an empty split first (datamodules.errors.require_rows)
            raise ValueError(f"cannot draw training samples from an empty dataset (size {dataset_size})")
        # DistributedSampler only needs len(dataset); avoid holding the dataset itself.
        super().__init__(
            range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
        self.dataset_size = dataset_size
        self.fraction = fraction
        per_epoch = max(1, round(fraction * dataset_size))
        # Equal share per rank (DDP needs the same number of steps everywhere): drop the remainder.
        self.num_samples = max(1, per_epoch // num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.loader_generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.loader_generator.manual_seed((self.seed + 1_000_003 * epoch + 7_919 * self.rank) % (2**63 - 1))

    def __iter__(self) -> Iterator[int]:
        passes = math.ceil(self.total_size / self.dataset_size)  # > 1: fraction > 1, or fewer rows than ranks
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.cat([torch.randperm(self.dataset_size, generator=g) for _ in range(passes)])
        else:
            order = torch.arange(self.dataset_size).repeat(passes)
        chosen = order[: self.total_size]
        return iter(chosen[self.rank : self.total_size : self.num_replicas].tolist())


class EvalSampler(DistributedSampler):
    def __init__(self, dataset_size: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(
            range(dataset_size), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False
        )
        self.loader_generator = torch.Generator().manual_seed(rank)
        self.dataset_size = dataset_size
        self.num_samples = len(range(rank, dataset_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length from any index sampler.

    The sampler's indices (this epoch's fresh share, this rank's part) are cut into pools of
    ``pool_batches * batch_size``; each pool is sorted by length and cut into batches, and with
    ``shuffle`` the batches are shuffled, so a batch holds texts of similar length (little padding)
    while the epoch's order stays random. ``set_epoch`` reaches the wrapped sampler.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        lengths: Sequence[int],
        batch_size: int,
        pool_batches: int = 50,
        shuffle: bool = True,
    ) -> None:
        self.sampler, self.lengths = sampler, list(lengths)
        self.batch_size, self.pool_batches, self.shuffle = batch_size, pool_batches, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        indices = list(self.sampler)
        pool = self.batch_size * self.pool_batches
        batches = []
        for start in range(0, len(indices), pool):
            chunk = sorted(indices[start : start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            g = torch.Generator().manual_seed(1_000_003 * self.epoch + getattr(self.sampler, "seed", 0))
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return iter(batches)
