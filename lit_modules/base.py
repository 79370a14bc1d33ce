"""What every LightningModule of the suite shares: optimizers, schedulers, training-loss logging and
the validation/test loop hooks.

The contract (see CONTRIBUTING.md, "Adding a model"). A model writes:

* ``training_step(batch, batch_idx)`` returning the loss (or ``{"loss": ..., "batch_size": n}``; in
  manual optimisation the loss to log, already stepped);
* ``evaluation_step(batch, split)`` for ``split`` in ``val`` / ``test``: update its metrics;
* ``evaluation_epoch_end(split)``: log them (and draw figures); the base then resets every
  torchmetrics object of the model; optionally ``evaluation_epoch_start(split)``;
* optionally ``training_epoch_finished()`` (per-epoch updates such as the DBN rebalance),
  ``optimizer_parameters()`` (one entry per optimizer) and ``log_train_values(...)`` for extra
  per-step values logged as epoch means.

:class:`SuiteModule` owns the Lightning hooks that chain these (``configure_optimizers``,
``validation_step``, ``test_step``, ``on_{validation,test}_epoch_{start,end}``, ``on_train_batch_end``,
``on_train_epoch_end``, ``on_train_start``): a subclass that overrides one of them is refused when
the class is defined, so no model can forget to call ``super()``.

Optimizers and schedulers are Hydra ``_partial_`` configs (``conf/optimizer``, ``conf/scheduler``)
handed over as ``functools.partial`` objects, so any model accepts ``optimizer=sgd
scheduler=cosine``; every optimizer of a model gets its own scheduler from the same partial.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.utilities.data import extract_batch_size
from torch import nn
from torchmetrics import Metric

OptimizerFactory = Callable[..., torch.optim.Optimizer]

#: Lightning hooks that :class:`SuiteModule` implements for every model; subclasses use the
#: extension points named in the module docstring instead.
OWNED_HOOKS = (
    "configure_optimizers",
    "validation_step",
    "test_step",
    "on_validation_epoch_start",
    "on_test_epoch_start",
    "on_validation_epoch_end",
    "on_test_epoch_end",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_train_start",
)


def per_split(
    make: Callable[[], nn.Module], keys: Iterable[str] | None = None, splits: Sequence[str] = ("val", "test")
) -> nn.ModuleDict:
    """``{split: make()}`` for every evaluation split, or ``{split: {key: make()}}`` with ``keys``
    (e.g. one metric per prediction rule), as ``ModuleDict``s."""
    if keys is None:
        return nn.ModuleDict({split: make() for split in splits})
    return nn.ModuleDict({split: nn.ModuleDict({key: make() for key in keys}) for split in splits})


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Refuse an option value that is not one of ``choices`` (``ValueError`` naming the option)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class SuiteModule(LightningModule):
    """Base class of the suite's LightningModules.

    Args:
        optimizer: ``functools.partial`` of a torch optimizer (``conf/optimizer``), or a mapping
            ``{name: partial}`` with one entry per key of :meth:`optimizer_parameters` (a missing
            key uses the ``main`` one).
        scheduler: ``functools.partial`` of an LR scheduler (``conf/scheduler``) or ``None``.
        scheduler_interval: ``epoch`` or ``step``.

    The partials are attributes, not hyperparameters: checkpoints hold only tensors and plain values
    and load with ``torch.load(weights_only=True)``; the run's resolved config keeps the settings.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in OWNED_HOOKS if name in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {overridden}, which SuiteModule owns; implement "
                "training_step / evaluation_step / evaluation_epoch_end / training_epoch_finished / "
                "optimizer_parameters instead (lit_modules/base.py)"
            )

    def __init__(
        self,
        optimizer: OptimizerFactory | Mapping[str, OptimizerFactory] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__()
        check_choice("scheduler_interval", scheduler_interval, ("epoch", "step"))
        factories = dict(optimizer) if isinstance(optimizer, Mapping) else {"main": optimizer}
        self.optimizer_factories = {k: v for k, v in factories.items() if v is not None}
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.train_loss_means = EpochMeans()
        self.train_value_means = EpochMeans()

    # ------------------------------------------------------------------ extension points
    def optimizer_parameters(self) -> dict[str, Iterable[torch.nn.Parameter] | list[dict[str, Any]]]:
        """Parameters (or parameter groups) of each optimizer, by name; frozen ones are left out.
        Default: one optimizer (``main``) over every parameter that requires a gradient."""
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def evaluation_step(self, batch: Any, split: str) -> None:
        """Score one validation or test batch (``split``: ``val`` or ``test``)."""
        raise NotImplementedError(f"{type(self).__name__} does not evaluate")

    def evaluation_epoch_start(self, split: str) -> None:
        """Before the first ``split`` batch (optional)."""

    def evaluation_epoch_end(self, split: str) -> None:
        """Log the epoch's ``split`` metrics (the base resets them afterwards)."""

    def training_epoch_finished(self) -> None:
        """Per-epoch work after the epoch's means are logged (optional)."""

    def log_train_values(
        self, names: Sequence[str], values: torch.Tensor, counts: torch.Tensor | float | None = None
    ) -> None:
        """Extra per-step training values (task losses, loss weights ...), logged as epoch means
        weighted by ``counts`` (see :class:`EpochMeans`)."""
        self.train_value_means.add(names, values, counts)

    # ------------------------------------------------------------------ owned Lightning hooks
    def configure_optimizers(self) -> list[dict[str, Any]]:
        groups = self.optimizer_parameters()
        out = []
        for name, params in groups.items():
            factory = self.optimizer_factories.get(name) or self.optimizer_factories.get("main")
            if factory is None:
                raise ValueError(f"{type(self).__name__} was built without an optimizer for {name!r}")
            optimizer = factory(params=params)
            entry: dict[str, Any] = {"optimizer": optimizer}
            if self.scheduler_factory is not None:
                scheduler = self.scheduler_factory(optimizer=optimizer)
                entry["lr_scheduler"] = {"scheduler": scheduler, "interval": self.scheduler_interval}
            out.append(entry)
        return out

    def on_train_start(self) -> None:
        """Put the module in training mode through its own ``train()``.

        Lightning (>= 2.2) never calls ``train()`` at the start of fit: each submodule keeps the mode
        it had and the evaluation loops restore those modes. ``train()`` overrides that keep frozen
        parts in eval mode (fixed batch-norm statistics, no dropout) would never run otherwise.
        """
        self.train()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log the training loss as ``self.log(..., on_step=True, on_epoch=True, prog_bar=True)``
        would (``train/loss_step`` on logged steps, ``train/loss_epoch`` the batch-size-weighted
        epoch mean), for one tensor add per step: each ``self.log`` call costs Lightning ~1 ms on a
        CPU (``experiments.bench overhead``), so it is paid only every ``log_every_n_steps``. In
        manual optimisation the schedulers of ``interval: step`` are stepped here."""
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not self.automatic_optimization and self.scheduler_interval == "step":
            self._step_schedulers()
        if loss is None:
            return
        size = outputs.get("batch_size") if isinstance(outputs, Mapping) else None
        size = size if size is not None else extract_batch_size(batch)
        self.train_loss_means.add(["train/loss_epoch"], loss.detach().reshape(1), float(size))
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)

    def on_train_epoch_end(self) -> None:
        self.train_loss_means.log(self)
        self.train_value_means.log(self)
        self.training_epoch_finished()
        if not self.automatic_optimization and self.scheduler_interval == "epoch":
            self._step_schedulers()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.evaluation_epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self.evaluation_epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _end_evaluation(self, split: str) -> None:
        """The model logs its metrics; then every torchmetrics object of the model starts over."""
        self.evaluation_epoch_end(split)
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()

    @property
    def world_size(self) -> int:
        """The number of DDP ranks (1 outside a trainer)."""
        return 1 if self._trainer is None else self._trainer.world_size

    def reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """Sum over DDP ranks (every rank calls it at the same point; identity in one process)."""
        if self.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value, reduce_op="sum")

    def _step_schedulers(self) -> None:
        """Manual optimisation: Lightning leaves the schedulers to the module."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()


class EpochMeans:
    """Per-epoch means of per-step training values, kept as one device tensor and logged once at
    epoch end: a step costs one tensor add and no host-device synchronisation. ``counts`` weight
    each value (e.g. the labelled samples of a task; 0 = absent this step); names never seen are
    not logged."""

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

    def log(self, module: SuiteModule) -> None:
        """Log the means (sums and counts reduced over DDP ranks first, so every rank logs the same
        names) and start the next epoch."""
        if self.sums is None:
            return
        sums, counts = module.reduce_sum(self.sums), module.reduce_sum(self.counts)
        means = sums / counts.clamp_min(1e-12)
        for name, mean, seen in zip(self.names, means, (counts > 0).tolist()):
            if seen:
                module.log(name, mean)
        self.sums = self.counts = None
