"""What every LightningModule of the suite shares: optimizer and scheduler from config.

Optimizers and schedulers are Hydra ``_partial_`` configs (``conf/optimizer``, ``conf/scheduler``)
handed to the module already instantiated as ``functools.partial`` objects, so any model accepts
``optimizer=sgd scheduler=cosine`` from the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning import LightningModule


class SuiteModule(LightningModule):
    """Base class: subclasses store ``optimizer``/``scheduler`` in ``self.hparams`` via
    ``save_hyperparameters`` and may override :meth:`trainable_parameters`."""

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
        """Parameters (or parameter groups) handed to the optimizer; frozen ones are left out."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        make_optimizer: Callable[..., torch.optim.Optimizer] = self.hparams.optimizer
        optimizer = make_optimizer(params=self.trainable_parameters())
        make_scheduler = self.hparams.get("scheduler")
        if make_scheduler is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": make_scheduler(optimizer=optimizer),
                "interval": self.hparams.get("scheduler_interval", "epoch"),
                "frequency": 1,
            },
        }
