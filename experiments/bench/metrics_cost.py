"""``metrics``: the cost of the metric updates per evaluation step, as a share of the step.

The experiment's module runs ``trainer.test`` over ``--batches`` batches; every torchmetrics
``Metric`` inside it has its ``update`` timed (wall clock, GPU synchronised), and the whole
validation step is timed by a callback. ``compute()`` at epoch end (once per epoch, with the DDP
gather) is reported separately.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchmetrics import Metric

from experiments.bench.common import compose_experiment, synchronize
from experiments.bench.overhead import DEFAULT_EXPERIMENTS
from experiments.stages import build_data_and_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiments", nargs="+", default=DEFAULT_EXPERIMENTS)
    parser.add_argument("--batches", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=5, help="first batches not timed")
    parser.add_argument("overrides", nargs="*")


class _Clock:
    def __init__(self) -> None:
        self.seconds = {"update": 0.0, "compute": 0.0}
        self.active = True

    def wrap(self, metric: Metric, what: str) -> None:
        inner = getattr(metric, what)

        def timed(*args: Any, **kwargs: Any) -> Any:
            synchronize()
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                synchronize()
                if self.active or what == "compute":
                    self.seconds[what] += time.perf_counter() - start

        setattr(metric, what, timed)


class _ValStepTimer(Callback):
    """Times the validation steps after ``warmup`` and tells the metric clock when to count."""

    def __init__(self, clock: _Clock, warmup: int) -> None:
        self.clock, self.warmup = clock, warmup
        self.seconds, self.steps = 0.0, 0

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.clock.active = batch_idx >= self.warmup
        synchronize()
        self.start = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        synchronize()
        if batch_idx >= self.warmup:
            self.seconds += time.perf_counter() - self.start
            self.steps += 1


def measure(experiment: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose_experiment(experiment, args.overrides)
    datamodule, model = build_data_and_model(cfg)
    clock = _Clock()
    metrics = [m for m in model.modules() if isinstance(m, Metric)]
    for metric in metrics:
        clock.wrap(metric, "update")
        clock.wrap(metric, "compute")
    timer = _ValStepTimer(clock, args.warmup)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        default_root_dir=cfg.paths.output_dir,
        limit_test_batches=args.batches + args.warmup,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.test(model, datamodule=datamodule, verbose=False)
    step_ms = 1e3 * timer.seconds / max(1, timer.steps)
    update_ms = 1e3 * clock.seconds["update"] / max(1, timer.steps)
    return {
        "experiment": experiment,
        "metric_objects": len(metrics),
        "eval_step_ms": step_ms,
        "metric_update_ms": update_ms,
        "update_share_pct": 100.0 * update_ms / step_ms,
        "compute_ms_per_epoch": 1e3 * clock.seconds["compute"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [measure(e, args) for e in args.experiments]
    return {
        "title": "metric updates per evaluation step",
        "columns": [
            "experiment",
            "metric_objects",
            "eval_step_ms",
            "metric_update_ms",
            "update_share_pct",
            "compute_ms_per_epoch",
        ],
        "rows": rows,
        "settings": vars(args),
        "notes": ["target: metric updates < 2 % of the step; updates stay on the step's device (no .item())"],
    }
