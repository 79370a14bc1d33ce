"""What every LightningModule of the suite shares: optimizer and scheduler from config.

Optimizers and schedulers are Hydra ``_partial_`` configs (``conf/optimizer``, ``conf/scheduler``)
handed to the module already instantiated as ``functools.partial`` objects, so any model accepts
``optimizer=sgd scheduler=cosine`` from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from lightning import LightningModule


class SuiteModule(LightningModule):
    """Base class: subclasses pass the optimizer/scheduler partials to ``__init__`` and may override
    :meth:`trainable_parameters`.

    The partials are kept as attributes, not hyperparameters: checkpoints then hold only tensors and
    plain values and load with ``torch.load(weights_only=True)``; the run's resolved config keeps
    the optimizer and scheduler settings.
    """

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Any = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.train_loss_means = EpochMeans()

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log the training loss as ``self.log(..., on_step=True, on_epoch=True, prog_bar=True)``
        would (``train/loss_step`` on the logged steps and in the progress bar, ``train/loss_epoch``
        the epoch's batch-size-weighted mean), for one tensor add per step.

        Each ``self.log`` call costs Lightning ~1 ms on a CPU (it moves its result object to the
        value's device on every call: ``experiments.bench overhead``); here that is paid only on the
        steps the logger writes (every ``trainer.log_every_n_steps``).
        """
        self.train_loss_means.add(["train/loss_epoch"], loss.detach().reshape(1), float(batch_size))
        every = self._trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(1, every) == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        """Logs ``train/loss_epoch``; subclasses that override this call ``super()``."""
        self.train_loss_means.log(self)

    def on_train_start(self) -> None:
        """Put the module in training mode through its own ``train()``.

        Lightning (>= 2.2) never calls ``train()`` at the start of fit: each submodule keeps the mode
        it had (training, for a freshly built one) and the evaluation loops restore those modes. The
        ``train()`` overrides that keep frozen parts in eval mode (fixed batch-norm statistics, no
        dropout) would never run, and a "frozen" encoder would drift. Subclasses call ``super()``.
        """
        self.train()

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
        """Parameters (or parameter groups) handed to the optimizer; frozen ones are left out."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__} was built without an optimizer (conf/optimizer)")
        optimizer = self.optimizer_factory(params=self.trainable_parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.scheduler_factory(optimizer=optimizer),
                "interval": self.scheduler_interval,
                "frequency": 1,
            },
        }


class EpochMeans:
    """Per-epoch means of per-step training values, kept as one device tensor and logged once at
    epoch end.

    Each ``self.log`` call costs Lightning's bookkeeping (tenths of a millisecond on a CPU), which
    adds up for models that log several values per step (``experiments.bench overhead``); here a
    step costs one tensor add and no host-device synchronisation. ``counts`` weight each value
    (e.g. the labelled samples of a task; 0 = absent this step); names never seen are not logged.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None

    def add(
        self, names: Sequence[str], values: torch.Tensor, counts: torch.Tensor | float | None = None
    ) -> None:
        values = values.detach().float()
        if not isinstance(counts, torch.Tensor):  # None or a number: a fill, no host->device copy
            counts = torch.full_like(values, 1.0 if counts is None else float(counts))
        counts = counts.detach().float()
        if self.sums is None:
            self.names = list(names)
            self.sums, self.counts = torch.zeros_like(values), torch.zeros_like(values)
        elif list(names) != self.names:
            raise ValueError(f"EpochMeans: names changed within an epoch ({self.names} -> {list(names)})")
        self.sums += values * counts
        self.counts += counts

    def log(self, module: LightningModule) -> None:
        """Log the means (sums and counts reduced over DDP ranks first, so every rank logs the same
        names) and start the next epoch."""
        if self.sums is None:
            return
        sums, counts = self.sums, self.counts
        trainer = module._trainer
        if trainer is not None and trainer.world_size > 1:
            sums = trainer.strategy.reduce(sums, reduce_op="sum")
            counts = trainer.strategy.reduce(counts, reduce_op="sum")
        means = sums / counts.clamp_min(1e-12)
        for name, mean, seen in zip(self.names, means, (counts > 0).tolist()):
            if seen:
                module.log(name, mean)
        self.sums = self.counts = None
