"""Test a checkpoint: ``python -m experiments.evaluate experiment=<name> ckpt_path=<file.ckpt>``.

The model is built from the same config groups as in training; scalar hyperparameters stored in
the checkpoint (e.g. the tagger's ``stage``) override the config so the checkpoint is scored the
way it was trained. Writes ``metrics.json`` (``{"checkpoint": ..., "test": {...}}``) to the run dir.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.common import is_rank_zero, run_guarded, save_resolved_config, to_float_dict, write_json
from experiments.run_checks import check_run_options, checkpoint_file
from experiments.stages import build_data_and_model, build_trainer

log = logging.getLogger(__name__)


def apply_checkpoint_hparams(cfg: DictConfig, ckpt_path: Path) -> None:
    """Copy the checkpoint's scalar hyperparameters over ``cfg.model`` (only keys the config has)."""
    hparams = torch.load(ckpt_path, map_location="cpu").get("hyper_parameters", {})
    with open_dict(cfg):
        for key, value in hparams.items():
            if key in cfg.model and isinstance(value, (str, int, float, bool)):
                cfg.model[key] = value


def evaluate(cfg: DictConfig) -> dict:
    ckpt = checkpoint_file(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    apply_checkpoint_hparams(cfg, ckpt)
    cfg = OmegaConf.merge(cfg, cfg.get("all_stages") or {})
    check_run_options(cfg)
    run_dir = Path(cfg.paths.output_dir)
    datamodule, model = build_data_and_model(cfg)
    save_resolved_config(cfg, run_dir / "config.yaml")
    trainer = build_trainer(cfg)
    trainer.test(model, datamodule=datamodule, ckpt_path=str(ckpt))
    summary = {
        "experiment": cfg.get("experiment_name"),
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt),
        "test": to_float_dict(trainer.callback_metrics, "test/"),
    }
    if is_rank_zero():
        write_json(run_dir / "metrics.json", summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate.yaml")
def main(cfg: DictConfig) -> None:
    summary = run_guarded("experiments.evaluate", cfg, evaluate)
    log.info("metrics: %s/metrics.json", summary["run_dir"])


if __name__ == "__main__":
    main()
