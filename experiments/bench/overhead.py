"""``overhead``: what the suite costs per training step over a bare PyTorch loop.

Both loops train the same module (two deep copies of one initialisation) on the same batches
(drawn once from the experiment's DataModule and kept in memory, so data loading is not measured),
with the same optimizer (the module's ``configure_optimizers``) and precision:

* bare: ``zero_grad; loss = module.training_step(batch); backward; step``, ``self.log`` switched off;
* suite: ``trainer.fit`` with the experiment's trainer, callbacks and logger (validation off).

The per-step time is taken between the start of the first timed step and the end of the last, after
warm-up steps, from the fastest of interleaved repeats. A third, profiled suite run (Lightning's
SimpleProfiler) says where the difference goes.

Manually optimised modules are measured the same way when their ``training_step`` works without a
Trainer; otherwise they are reported as skipped.

On a shared CPU the two loops' times vary by 10-40 % from repeat to repeat, more than the few per
cent being measured. So the suite's fixed per-step cost is also measured on its own: the same
trainer, callbacks and logger around a one-layer module (``fixed_ms``: suite minus bare per step;
its steps take well under a millisecond, and the figure moved by under 0.1 ms between runs here),
and ``fixed_share_pct = fixed_ms / bare_ms`` is the overhead it implies for the model.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict
from torch.utils.data import DataLoader

from experiments.bench.common import compose_experiment, synchronize
from experiments.stages import build_data_and_model, build_trainer
from lit_modules.base import SuiteModule

DEFAULT_EXPERIMENTS = ["tagger", "hashtag", "crisismmd"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiments", nargs="+", default=DEFAULT_EXPERIMENTS)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every experiment")


def draw_batches(datamodule: L.LightningDataModule, count: int) -> list[Any]:
    datamodule.prepare_data()
    datamodule.setup("fit")
    batches: list[Any] = []
    while len(batches) < count:
        for batch in datamodule.train_dataloader():
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


class _StepTimer(Callback):
    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.seconds = self.cpu_seconds = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.first:
            synchronize()
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.last + 1:
            synchronize()
            self.seconds = time.perf_counter() - self.start
            self.cpu_seconds = time.process_time() - self.cpu_start


class _OneLayer(SuiteModule):
    """The smallest module that logs like the suite's models: what a step costs besides the model."""

    def __init__(self) -> None:
        super().__init__(optimizer=lambda params: torch.optim.Adam(params, lr=1e-3))
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch["x"]).pow(2).mean()


def fixed_cost_ms(cfg: Any, repeats: int, steps: int = 200, warmup: int = 5) -> float:
    """Per-step time of the suite minus the bare loop around :class:`_OneLayer` (fastest repeats)."""
    batches = [{"x": torch.randn(32, 8)} for _ in range(warmup + steps)]
    module = _OneLayer()
    bare = [bare_loop(copy.deepcopy(module), batches, warmup)[0] for _ in range(repeats)]
    suite = [
        suite_loop(copy.deepcopy(cfg), copy.deepcopy(module), batches, warmup)[0][0] for _ in range(repeats)
    ]
    return 1e3 * (min(suite) - min(bare)) / steps


def bare_loop(
    module: L.LightningModule, batches: list[Any], warmup: int, autocast: torch.dtype | None = None
) -> tuple[float, float]:
    """``(wall, process CPU)`` seconds for the steps after ``warmup`` of a plain PyTorch training loop
    (``training_step`` under ``torch.autocast(autocast)`` when given)."""
    module.train()
    module.log = module.log_dict = lambda *args, **kwargs: None
    optimizer = module.configure_optimizers()[0]["optimizer"]
    device_type = next(module.parameters()).device.type
    start = cpu_start = 0.0
    for i, batch in enumerate(batches):
        if i == warmup:
            synchronize()
            start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=autocast) if autocast else nullcontext():
            loss = module.training_step(batch, i)
        loss.backward()
        optimizer.step()
    synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start


def suite_loop(
    cfg: Any, module: L.LightningModule, batches: list[Any], warmup: int, profiler: str | None = None
) -> tuple[tuple[float, float], Any]:
    """``(wall, process CPU)`` seconds for the same steps through ``trainer.fit`` (experiment's
    callbacks and logger), and the trainer."""
    with open_dict(cfg):
        cfg.trainer.max_steps = len(batches)
        cfg.trainer.max_epochs = 1
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        cfg.trainer.enable_checkpointing = False
        if profiler:  # written to a file (not printed) under the bench's scratch run dir
            cfg.trainer.profiler = {
                "_target_": "lightning.pytorch.profilers.SimpleProfiler",
                "dirpath": str(cfg.paths.output_dir),
                "filename": "profile",
            }
        callbacks = {
            k: v
            for k, v in (cfg.get("callbacks") or {}).items()
            if v is not None
            and "ModelCheckpoint" not in str(v.get("_target_", ""))
            and "EarlyStopping" not in str(v.get("_target_", ""))
        }
        cfg.callbacks = callbacks
    trainer = build_trainer(cfg)
    timer = _StepTimer(warmup, len(batches) - 1)
    trainer.callbacks.append(timer)
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    return (timer.seconds, timer.cpu_seconds), trainer


# Profiled actions that contain the model's own forward/backward/step (the part both loops share).
_MODEL_WORK = (
    "run_training_batch",
    "optimizer_step",
    "training_step",
    "backward",
    "run_training_epoch",
    "fit_loop",
    "_run_train",
    "train_dataloader_next",
)


def profile_breakdown(trainer: Any, steps: int, top: int = 8) -> list[dict[str, Any]]:
    """What the suite adds, per step (ms): the profiled actions that are not the model's own work
    (hooks of callbacks, loggers and the loop), largest first."""
    durations = getattr(trainer.profiler, "recorded_durations", {})
    rows = [
        {"action": k, "ms_per_step": 1e3 * sum(v) / max(1, steps)}
        for k, v in durations.items()
        if not any(w in k for w in _MODEL_WORK)
    ]
    return sorted(rows, key=lambda r: -r["ms_per_step"])[:top]


def measure(experiment: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = compose_experiment(experiment, args.overrides)
    datamodule, model = build_data_and_model(cfg)
    if not model.automatic_optimization:
        return {"experiment": experiment, "note": "manual optimisation: no bare loop to compare with"}
    batches = draw_batches(datamodule, args.warmup + args.steps)
    initial = copy.deepcopy(model.state_dict())

    def fresh() -> L.LightningModule:
        m = copy.deepcopy(model)
        m.load_state_dict(initial)
        return m

    def bare() -> tuple[float, float]:
        return bare_loop(fresh(), batches, args.warmup)

    def suite() -> tuple[float, float]:
        return suite_loop(copy.deepcopy(cfg), fresh(), batches, args.warmup, None)[0]

    wall: dict[str, list[float]] = {"bare": [], "suite": []}
    cpu: dict[str, list[float]] = {"bare": [], "suite": []}
    for _ in range(args.repeats):  # interleaved, so drifts of a noisy machine hit both alike
        for name, loop in (("bare", bare), ("suite", suite)):
            w, c = loop()
            wall[name].append(w)
            cpu[name].append(c)
    # The fastest repeat of each loop is the least disturbed one (a shared machine only ever adds
    # time). The process's CPU time is reported too, which would leave out time stolen by other
    # tenants (on the 2-core machine of README it tracked wall time; on a GPU only wall time counts).
    _, profiled = suite_loop(copy.deepcopy(cfg), fresh(), batches, args.warmup, "simple")
    bare_ms, suite_ms = 1e3 * min(wall["bare"]) / args.steps, 1e3 * min(wall["suite"]) / args.steps
    cpu_pct = 100.0 * (min(cpu["suite"]) / min(cpu["bare"]) - 1.0)
    median_pct = 100.0 * (statistics.median(wall["suite"]) / statistics.median(wall["bare"]) - 1.0)
    spread_pct = 100.0 * (max(wall["bare"]) / min(wall["bare"]) - 1.0)
    fixed_ms = fixed_cost_ms(cfg, args.repeats)
    return {
        "experiment": experiment,
        "batch_size": int(cfg.data.batch_size),
        "precision": str(cfg.trainer.precision),
        "bare_ms": bare_ms,
        "suite_ms": suite_ms,
        "overhead_pct": 100.0 * (suite_ms / bare_ms - 1.0),
        "overhead_median_pct": median_pct,
        "overhead_cpu_pct": cpu_pct,
        "bare_spread_pct": spread_pct,
        "fixed_ms": fixed_ms,
        "fixed_share_pct": 100.0 * fixed_ms / bare_ms,
        "bare_runs_s": wall["bare"],
        "suite_runs_s": wall["suite"],
        "bare_cpu_s": cpu["bare"],
        "suite_cpu_s": cpu["suite"],
        "suite_breakdown": profile_breakdown(profiled, len(batches)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [measure(e, args) for e in args.experiments]
    notes = [
        "overhead_pct = suite / bare - 1 per step (target <= 3 %); data loading excluded (batches in memory)",
        f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.repeats} interleaved repeats; "
        "bare_ms / suite_ms: the fastest repeat of each (noise only adds time); overhead_median_pct: from "
        "the medians; overhead_cpu_pct: from the process CPU time (fastest repeats), which leaves out "
        "time stolen by other tenants; bare_spread_pct: slowest / fastest bare repeat, the machine's noise",
        "fixed_ms: the suite's per-step cost around a one-layer module (same trainer, callbacks, logger); "
        "fixed_share_pct = fixed_ms / bare_ms, the overhead it implies "
        "(steady where the direct figures are noisy)",
    ]
    for r in rows:
        if r.get("suite_breakdown"):
            top = ", ".join(f"{b['action']} {b['ms_per_step']:.2f} ms" for b in r["suite_breakdown"][:5])
            notes.append(f"{r['experiment']}: largest suite-only actions per step (SimpleProfiler): {top}")
    return {
        "title": "suite training step vs bare PyTorch loop",
        "columns": [
            "experiment",
            "batch_size",
            "precision",
            "bare_ms",
            "suite_ms",
            "overhead_pct",
            "overhead_median_pct",
            "overhead_cpu_pct",
            "bare_spread_pct",
            "fixed_ms",
            "fixed_share_pct",
            "note",
        ],
        "rows": rows,
        "notes": notes,
        "settings": vars(args),
    }
