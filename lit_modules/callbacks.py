"""Trainer callbacks and plugins shared by every model, among them what keeps a run safe under faults:
atomic checkpoints (:class:`AtomicCheckpointIO`), a resumable checkpoint on SIGTERM
(:class:`SigtermCheckpoint`), a stop on a non-finite training loss (:class:`NonFiniteLossGuard`) and
CSV curves without the rows of an interrupted attempt (:class:`TrimResumedLogs`)."""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from typing import Any

import torch
from lightning import Callback, LightningModule, Trainer
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from datamodules.files import atomic_path

log = logging.getLogger(__name__)


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

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seed_everything(
            self.epoch_seed(trainer.current_epoch, trainer.global_rank), workers=True, verbose=False
        )

    # A run resumed from an end-of-epoch checkpoint does not call on_train_epoch_start for the
    # epoch it resumes into; on_train_start runs after the restore and before that epoch's data.
    on_train_start = on_train_epoch_start


class ChannelsLast(Callback):
    """Convolution weights (and so activations) in channels-last memory format, the layout tensor
    cores use for convolutions under bf16/fp16 autocast; images arrive NCHW and the first convolution
    converts them. A no-op for models without 4-D weights."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pl_module.to(memory_format=torch.channels_last)

    on_test_start = on_fit_start


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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the checkpoint's own folder, synced and renamed over
    the destination (:func:`datamodules.files.atomic_path`).

    Lightning's default stages a checkpoint in ``$TMPDIR`` and moves it; when ``$TMPDIR`` is another
    filesystem (a node's small local disk, run dirs on a shared filesystem) the move is a copy, so a
    full disk leaves a truncated ``last.ckpt`` in place of the good one, and a full ``$TMPDIR`` fails
    every save. Here a failed save leaves the previous checkpoint intact and the error names the path.
    Remote paths (``s3://`` ...) keep Lightning's own writer. Set for every run in
    ``conf/trainer/default.yaml`` (``plugins``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            try:
                torch.save(checkpoint, f)
            except RuntimeError as err:  # torch's writer wraps the OSError (a full disk) of f.write
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from err
                raise


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss (the run diverged)."""

    def __init__(self, stage: str, step: int, epoch: int, loss: float | None) -> None:
        self.stage, self.step, self.epoch, self.loss = stage, step, epoch, loss
        value = "non-finite on another rank" if loss is None else f"{loss}"
        super().__init__(
            f"stage {stage}: the training loss is not finite ({value}) at step {step} (epoch {epoch}); "
            "training stopped, no checkpoint of the diverged weights was written and the run is not "
            "exported. Lower the learning rate (optimizer.lr), or look for bad inputs (debug=default "
            "turns on anomaly detection)."
        )

    def details(self) -> dict[str, Any]:
        """The stage, step, epoch and loss (as text: JSON has no NaN or infinity)."""
        loss = None if self.loss is None else str(self.loss)
        return {"stage": self.stage, "step": self.step, "epoch": self.epoch, "loss": loss}


class NonFiniteLossGuard(Callback):
    """Stop training on the first non-finite training loss, with the stage, step and value.

    The check costs no host-device synchronisation per step: the first bad step is kept on the device
    (``torch.where``) and read every ``log_every_n_steps`` steps, before every validation and at the
    end of every epoch, i.e. before any checkpoint is written, so no saved checkpoint holds the
    diverged weights. Under DDP the ranks agree (a minimum over ranks) and stop together.
    """

    def __init__(self, stage: str = "main") -> None:
        self.stage = stage
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = trainer.fit_loop.epoch_loop.total_batch_idx  # this batch, counted over the stage's epochs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().float().reshape(-1)[:1]
            if self._bad_step is None:
                self._bad_step = torch.full_like(loss, math.inf)
                self._bad_loss = torch.zeros_like(loss)
            first = ~torch.isfinite(loss) & torch.isinf(self._bad_step)
            self._bad_step = torch.where(first, torch.full_like(loss, step), self._bad_step)
            self._bad_loss = torch.where(first, loss, self._bad_loss)
        if (step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        step = self._bad_step
        if trainer.world_size > 1:  # every rank takes part, also one that has seen no loss yet
            if step is None:
                step = torch.full((1,), math.inf, device=trainer.strategy.root_device)
            step = trainer.strategy.reduce(step.clone(), reduce_op="min")
        if step is None:
            return
        first = float(step.item())
        if math.isfinite(first):
            own = self._bad_step is not None and math.isfinite(float(self._bad_step.item()))
            loss = float(self._bad_loss.item()) if own else None
            self._bad_step = self._bad_loss = None
            raise NonFiniteLossError(self.stage, int(first), trainer.current_epoch, loss)


def install_sigterm_handler() -> None:
    """SIGTERM outside Lightning's loops (data preparation, between stages, export) raises Lightning's
    :class:`SIGTERMException` at once; inside ``fit``/``test`` Lightning's own handler (which calls this
    one too) sets a flag, the loop stops after the current batch and :class:`SigtermCheckpoint` saves
    the stage. Either way the entry point sees one exception and exits with status 143."""

    def handler(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) is handler:  # Lightning's handler is not installed
            raise SIGTERMException()

    signal.signal(signal.SIGTERM, handler)


class SigtermCheckpoint(Callback):
    """On SIGTERM during ``fit`` (preemption, ``scancel``, ``kill``), save a resumable checkpoint of the
    stage where it stands (mid-epoch, with loop and optimizer state) as ``hpc_ckpt_<n>.ckpt`` in the run
    dir, the file a SLURM requeue writes on SIGUSR1; ``ckpt_path=last`` (or the requeued job) resumes
    the interrupted stage from it. Every rank takes part in the save (it is collective under DDP).

    A SIGTERM during a validation inside ``fit`` lets that validation finish first (it is bounded by
    ``limit_val_batches``); the stage stops after it. Lightning stops at the next validation batch
    instead, and a run resumed from there does not run that validation again: the epoch would have
    no validation metrics, no checkpoint selection and no early-stopping check."""

    def __init__(self) -> None:
        self._deferred = False

    def on_validation_batch_end(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.state.fn == TrainerFn.FITTING and trainer.received_sigterm:
            trainer._signal_connector.received_sigterm = False
            self._deferred = True

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._deferred:
            self._deferred = False
            trainer._signal_connector.received_sigterm = True

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM: saved %s at step %d (epoch %d)", path, trainer.global_step, trainer.current_epoch
            )


class TrimResumedLogs(Callback):
    """Before a stage trains or tests, drop the rows its CSV log holds from step ``S`` on, where ``S``
    is where this attempt starts logging (the restored step of a resumed run, 0 for a fresh one): the
    rows a killed attempt logged after its last checkpoint are replaced by the resumed run's own,
    never repeated. Acts on loggers with a ``drop_rows_from(step)`` method
    (:class:`lit_modules.loggers.ResumableCSVLogger`)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step the loggers write
        for logger in trainer.loggers:
            if hasattr(logger, "drop_rows_from"):
                logger.drop_rows_from(step)

    on_test_start = on_train_start


def safety_callbacks(stage: str) -> list[Callback]:
    """The callbacks every training run gets, whatever its ``callbacks`` config says."""
    return [NonFiniteLossGuard(stage), SigtermCheckpoint(), TrimResumedLogs()]


def hpc_checkpoints(folder: Path) -> list[Path]:
    """The ``hpc_ckpt_<n>.ckpt`` files of ``folder``, oldest first."""
    return sorted(folder.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
