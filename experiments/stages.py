"""The shared stage runner: fit, test and hand over, for one or many stages.

A method with several training stages lists them in its experiment config, in order::

    stages:
      image_cnn: {model: {stage: image_cnn}, optimizer: {lr: 1.0e-3}}
      fusion:    {model: {stage: fusion}, optimizer: {lr: 1.0e-2}, trainer: {max_epochs: 8}}

Each entry is merged over the root config to give that stage's config (any group may be
overridden: model, optimizer, scheduler, trainer, data, callbacks). Each stage starts from the
previous stage's best checkpoint (or ``init_ckpt`` for the first stage run), is tested on its best
checkpoint, and leaves ``stages/<name>.json`` behind. ``run_stages=[fusion]`` runs a subset; a
method without ``stages`` is a single stage called ``main``.

Resume (``ckpt_path=last`` with the earlier run's ``run_dir``): every stage that has a
``last.ckpt`` continues from it with its step count, optimizer and scheduler state (a finished
stage returns at once unless ``trainer.max_epochs`` was raised), and the stage a SIGTERM or a
SLURM requeue interrupted continues from the mid-epoch ``hpc_ckpt_<n>.ckpt`` it left; a run dir
with none of these is an error, not a fresh start. ``ckpt_path=<file>`` resumes the first stage
run from that file.

Before anything is built, the options of the root config and of every stage are checked
(:mod:`experiments.run_checks`).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict

from datamodules.base import DataInfo, SuiteDataModule
from experiments.common import (
    build,
    finish_wandb,
    has_resumable_state,
    instantiate_list,
    is_rank_zero,
    is_requeued_slurm_job,
    save_resolved_config,
    to_float_dict,
    write_json,
)
from experiments.export import export_model
from experiments.run_checks import check_run_options
from lit_modules.callbacks import compile_children, hpc_checkpoints, safety_callbacks

log = logging.getLogger(__name__)


def command_line_overrides() -> list[tuple[str, Any]]:
    """``(key, value)`` of the key overrides given on the command line (or by a sweeper) for this
    job; config group choices (``optimizer=sgd``) are left out: they are already in the config."""
    if not HydraConfig.initialized():
        return []
    hydra_cfg = HydraConfig.get()
    groups = set(hydra_cfg.runtime.choices)
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return [
        (o.key_or_group, o.value())
        for o in overrides
        if not (o.is_delete() or o.key_or_group in groups or o.key_or_group.startswith("stages."))
    ]


def stage_configs(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """``(name, config)`` of every stage to run, in order.

    A stage's config is the root config, then the stage's own overrides (``stages.<name>``), then
    ``all_stages`` (what the debug configs set), then the command line's key overrides: what the
    user typed wins, for every stage. To change one stage only: ``stages.<name>.<key>=<value>``.
    """
    declared = list(cfg.get("stages") or {})
    names = declared or ["main"]
    wanted = list(cfg.get("run_stages") or names)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"run_stages names unknown stages {unknown}; this experiment declares {names}")
    typed = command_line_overrides()
    out = []
    for name in [n for n in names if n in wanted]:
        stage_cfg = OmegaConf.merge(cfg, cfg.stages[name] if declared else {}, cfg.get("all_stages") or {})
        with open_dict(stage_cfg):
            for key, value in typed:
                OmegaConf.update(stage_cfg, key, value, merge=True)
            stage_cfg.stage_name = name
            stage_cfg.stages = {}
        out.append((name, stage_cfg))
    return out


def instantiate_partial(node: DictConfig) -> Any:
    """Instantiate a ``_partial_`` optimizer/scheduler config, leaving out (with a warning) the keys
    its class does not take: an experiment that tunes ``scheduler.milestones`` for multistep can
    still be swept with ``scheduler=cosine``."""
    params = inspect.signature(get_class(node._target_)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return build(node)
    unknown = [k for k in node if not str(k).startswith("_") and k not in params]
    if unknown:
        log.warning("%s takes no %s: left out", node._target_, ", ".join(map(str, unknown)))
        node = OmegaConf.create({k: v for k, v in node.items() if k not in unknown})
    return build(node)


def _prepare_lock(root: Path) -> FileLock:
    """One lock per dataset folder and machine: the processes of a node prepare it one at a time
    (the first does the work, the others find it current)."""
    digest = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return FileLock(str(Path(tempfile.gettempdir()) / f"mmsuite-prepare-{digest}.lock"))


def build_data(cfg: DictConfig) -> SuiteDataModule:
    """The DataModule of ``cfg.data``, prepared (twin, indexes: once per node) and set up, so that
    its :class:`~datamodules.base.DataInfo` can be linked into the model config."""
    datamodule = build(cfg.data)
    with _prepare_lock(datamodule.root):
        datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def link_data(cfg: DictConfig, info: DataInfo) -> None:
    """Copy what the model needs from the data into ``cfg.model`` (as LightningCLI's
    ``link_arguments(apply_on="instantiate")``): ``model.data_links`` maps a model key (dotted, under
    ``model``) to a :class:`~datamodules.base.DataInfo` field."""
    links = cfg.model.get("data_links") or {}
    with open_dict(cfg):
        for key, name in links.items():
            if not hasattr(info, name):
                raise ValueError(
                    f"model.data_links.{key}: the data ({cfg.data._target_}) publishes no {name!r}; "
                    f"DataInfo has {sorted(f.name for f in fields(info))}"
                )
            value = getattr(info, name)
            if value is not None:  # None: this data has no such thing (e.g. no third modality)
                OmegaConf.update(cfg.model, str(key), value, merge=False)


def build_data_and_model(cfg: DictConfig) -> tuple[SuiteDataModule, L.LightningModule]:
    """Data first (set up, linked into ``cfg.model``), then the model from ``cfg.seed``: the order of
    a training stage, so a random initialisation is the one that stage would get."""
    datamodule = build_data(cfg)
    link_data(cfg, datamodule.info())
    L.seed_everything(cfg.seed, workers=True)
    return datamodule, build_model(cfg)


def build_model(cfg: DictConfig) -> L.LightningModule:
    """The LightningModule of ``cfg.model`` (linked to the data) with the ``_partial_`` optimizer and
    scheduler groups."""
    optimizer = instantiate_partial(cfg.optimizer)
    scheduler = instantiate_partial(cfg.scheduler) if cfg.get("scheduler") else None
    node = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
    node.pop("data_links", None)
    model = build(node, optimizer=optimizer, scheduler=scheduler)
    if cfg.get("compile") and hasattr(model, "net"):
        log.info("torch.compile: %s", ", ".join(compile_children(model.net)))
    return model


def load_weights(model: L.LightningModule, checkpoint: str | Path) -> None:
    """Start from another run's weights (not its optimizer state): the stage hand-over."""
    state = torch.load(checkpoint, map_location="cpu")
    state = state.get("state_dict", state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"{checkpoint} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The trainer of ``cfg.trainer`` with the configured callbacks and loggers, plus the safety
    callbacks every run gets whatever ``callbacks`` says (:func:`lit_modules.callbacks.safety_callbacks`:
    stop on a non-finite loss, checkpoint on SIGTERM, no repeated CSV rows after a resume)."""
    callbacks = instantiate_list(cfg.get("callbacks")) + safety_callbacks(str(cfg.get("stage_name", "main")))
    return build(cfg.trainer, callbacks=callbacks, logger=instantiate_list(cfg.get("logger")) or False)


def _best_checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that tracks the monitored metric (not the every-epoch ``last`` one)."""
    return next((cb for cb in trainer.checkpoint_callbacks if cb.monitor), None)


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    paths = [
        cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks if not cb.monitor
    ]
    return next((p for p in paths if p), None)


def run_stage(
    cfg: DictConfig,
    name: str,
    run_dir: Path,
    init_from: Any,
    resume: str | None,
    datamodule: SuiteDataModule,
) -> dict[str, Any]:
    """Fit and test one stage on ``datamodule`` (set up; its values linked into ``cfg.model``).
    ``init_from`` is a checkpoint path or a state dict (``None``: from scratch)."""
    L.seed_everything(cfg.seed, workers=True)
    model = build_model(cfg)
    if resume is None and init_from is not None:
        if isinstance(init_from, dict):
            model.load_state_dict(init_from)
        else:
            load_weights(model, init_from)
    trainer = build_trainer(cfg)
    # Modules save their hyperparameters with logger=False: loggers get the whole resolved config.
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    save_resolved_config(cfg, run_dir / "stages" / f"{name}.config.yaml")

    result: dict[str, Any] = {"name": name}
    if cfg.get("train", True):
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
        result["fit_seconds"] = round(time.perf_counter() - start, 2)
    ckpt_cb = _best_checkpoint_callback(trainer)
    best = ckpt_cb.best_model_path if ckpt_cb is not None else ""
    result.update(
        best_checkpoint=best or None,
        last_checkpoint=_last_checkpoint(trainer),
        monitor=ckpt_cb.monitor if ckpt_cb is not None else None,
        best_score=float(ckpt_cb.best_model_score)
        if ckpt_cb is not None and ckpt_cb.best_model_score is not None
        else None,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        val=to_float_dict(trainer.callback_metrics, "val/"),
    )
    if cfg.get("test", True):
        if not best:
            log.warning(
                "stage %s: no best checkpoint (fast_dev_run or no monitor): testing the current weights", name
            )
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        result["test"] = to_float_dict(trainer.callback_metrics, "test/")
    finish_wandb()
    result["_model"] = model
    return result


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run every stage of ``cfg`` in order; write the run summary, the export and return the summary."""
    run_dir = Path(cfg.paths.output_dir)
    resume_all = cfg.get("ckpt_path")
    init_from: Any = cfg.get("init_ckpt")
    summary: dict[str, Any] = {
        "experiment": cfg.get("experiment_name"),
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "stages": {},
    }
    stages = stage_configs(cfg)
    check_run_options(cfg, stages)
    last_result: dict[str, Any] = {}
    last_cfg = cfg
    model = datamodule = None
    # A SIGTERM or Lightning's SLURM requeue left a checkpoint of the interrupted stage in the run
    # dir: finished stages resume from their last.ckpt (and return at once), the interrupted one
    # from that checkpoint. A requeued SLURM job (SLURM_RESTART_COUNT > 0) resumes whatever it saved.
    requeue_ckpt = _requeue_checkpoint(run_dir)
    if resume_all is None and (
        requeue_ckpt is not None or (is_requeued_slurm_job() and has_resumable_state(run_dir))
    ):
        log.info("found %s: continuing a requeued run", requeue_ckpt or "checkpoints")
        resume_all = "last"
    elif resume_all == "last" and not has_resumable_state(run_dir):
        looked = [str(Path(c.paths.output_dir) / "checkpoints" / n / "last.ckpt") for n, c in stages]
        raise FileNotFoundError(
            f"ckpt_path=last: nothing to resume in run_dir={run_dir}; looked for "
            f"{', '.join(looked)} and {run_dir}/hpc_ckpt_*.ckpt. Check run_dir (the folder of the "
            "run to resume), or leave ckpt_path out to start a new run."
        )
    for i, (name, stage_cfg) in enumerate(stages):
        resume = None
        if resume_all == "last":
            # Every stage continues from its own last.ckpt when there is one: an interrupted stage
            # goes on with its step count, a finished one returns at once (or trains on if
            # max_epochs was raised) and is tested again; later stages start as usual.
            last_ckpt = Path(stage_cfg.paths.output_dir) / "checkpoints" / name / "last.ckpt"
            resume = str(last_ckpt) if last_ckpt.exists() else None
            if requeue_ckpt is not None and not (run_dir / "stages" / f"{name}.json").exists():
                resume = str(_archive_requeue_checkpoints(run_dir, name) / requeue_ckpt.name)
                requeue_ckpt = None
        elif resume_all and i == 0:
            resume = str(resume_all)
        log.info("stage %d/%d: %s", i + 1, len(stages), name)
        # The data is set up before the model is built: the model's config links what it needs
        # from it. A stage with the same data config keeps the previous stage's DataModule (its
        # index and decoded-image cache).
        if datamodule is None or stage_cfg.data != last_cfg.data:
            datamodule = build_data(stage_cfg)
        link_data(stage_cfg, datamodule.info())
        if i == 0:
            link_data(cfg, datamodule.info())
            save_resolved_config(cfg, run_dir / "config.yaml")
        last_result = run_stage(stage_cfg, name, run_dir, init_from, resume, datamodule)
        last_cfg = stage_cfg
        model = last_result.pop("_model")
        # Hand over the best weights; without a checkpoint (fast_dev_run) the weights in memory.
        init_from = last_result["best_checkpoint"] or {k: v.clone() for k, v in model.state_dict().items()}
        summary["stages"][name] = last_result
        if is_rank_zero():
            write_json(run_dir / "stages" / f"{name}.json", last_result)

    summary["test"] = last_result.get("test", {})
    # Training time over all stages (the hashtag seed's tables report it in minutes).
    summary["fit_minutes"] = round(sum(s.get("fit_seconds", 0.0) for s in summary["stages"].values()) / 60, 4)
    metric = cfg.get("optimized_metric")
    summary["optimized_metric"] = {"name": metric, "value": _lookup_metric(last_result, metric)}
    if cfg.get("export", True) and model is not None and is_rank_zero():
        summary["export"] = str(export_model(model, datamodule, last_cfg.model.net, run_dir / "export"))
    if is_rank_zero():
        write_json(run_dir / "metrics.json", summary)
    return summary


def _requeue_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``hpc_ckpt_<n>.ckpt`` in the run dir (written on SIGTERM, or by Lightning on SIGUSR1
    before a SLURM requeue), if any."""
    found = hpc_checkpoints(run_dir)
    return found[-1] if found else None


def _archive_requeue_checkpoints(run_dir: Path, stage: str) -> Path:
    """Move the requeue checkpoints next to their stage's checkpoints; the resumed stage reads its
    copy from there, and later stages (Lightning looks for hpc_ckpt_* in the run dir whenever it runs
    under SLURM) do not mistake it for theirs."""
    target = run_dir / "checkpoints" / stage
    target.mkdir(parents=True, exist_ok=True)
    for path in run_dir.glob("hpc_ckpt_*.ckpt"):
        try:
            path.replace(target / path.name)
        except FileNotFoundError:  # another DDP rank moved it first
            pass
    return target


def _lookup_metric(result: dict[str, Any], name: str | None) -> float | None:
    if not name:
        return None
    if name == result.get("monitor") and result.get("best_score") is not None:
        return result["best_score"]
    for group in ("test", "val"):
        if name in result.get(group, {}):
            return result[group][name]
    return None
