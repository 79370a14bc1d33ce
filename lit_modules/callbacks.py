"""Trainer callbacks shared by every model."""

from __future__ import annotations

from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import RichProgressBar


class EpochSeed(Callback):
    """Re-seed Python, NumPy and torch at the start of every training epoch from ``(seed, epoch, rank)``.

    * Resume: the randomness of epoch ``e`` (dropout, augmentation) does not depend on what ran
      before, so a run resumed from the checkpoint of epoch ``e - 1`` continues exactly as the
      uninterrupted run would (on a deterministic device).
    * DDP: ranks draw different augmentations and dropout masks; model init, data splits and the
      synthetic data use their own explicit seeds and agree across ranks.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def epoch_seed(self, epoch: int, rank: int) -> int:
        return (self.seed + 1_000_003 * epoch + 7_919 * rank) % (2**31 - 1)

    def _reseed(self, trainer: Trainer) -> None:
        seed_everything(
            self.epoch_seed(trainer.current_epoch, trainer.global_rank), workers=True, verbose=False
        )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run resumed from an end-of-epoch checkpoint does not call on_train_epoch_start for the
        # epoch it resumes into; this hook runs after the restore and before that epoch's data.
        self._reseed(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reseed(trainer)


class ChannelsLast(Callback):
    """Convolution weights (and so activations) in channels-last memory format, the layout tensor
    cores use for convolutions under bf16/fp16 autocast; images arrive NCHW and the first convolution
    converts them. A no-op for models without 4-D weights."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)


class SyncFreeRichProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` with the metrics column (``prog_bar=True`` values) refreshed
    every ``metrics_interval`` training steps (default: the trainer's ``log_every_n_steps``)
    instead of after every step; the bar itself still advances every step.

    Why: showing a logged tensor means ``.item()``, and on a GPU each ``.item()`` waits for every
    queued kernel, so a per-step refresh puts a host-device synchronisation into every step.
    Validation and epoch-end refreshes are unchanged.
    """

    def __init__(self, metrics_interval: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics_interval = metrics_interval

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.is_disabled and self.train_progress_bar_id is None:  # a mid-epoch resume
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, batch_idx + 1)
        interval = self.metrics_interval or trainer.log_every_n_steps or 1
        if (batch_idx + 1) % interval == 0:
            self._update_metrics(trainer, pl_module)
        self.refresh()


def compile_children(module: torch.nn.Module) -> list[str]:
    """``torch.compile`` each direct child of ``module`` that has parameters, in place
    (``nn.Module.compile``: the state-dict keys, checkpoints and exports are unchanged). Compiling
    the parts rather than the whole keeps the stage-specific code paths (a stage that runs one
    branch only) out of the compiled graphs. Returns the compiled children's names."""
    names = []
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            child.compile()
            names.append(name)
    return names
