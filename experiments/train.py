"""Train any model of the suite: ``python -m experiments.train experiment=<name> [overrides]``.

Reads top-down:
  1. Hydra composes ``conf/train.yaml`` with the experiment and the command line.
  2. The stage runner fits every stage of the method in order (one stage for single-stage
     models), tests each on its best checkpoint and hands the weights on.
  3. The run dir gets the resolved config, ``metrics.json``, checkpoints, the exported model and
     figures; the optimized metric is returned so Optuna sweeps can use it.

Faults (see ``docs/cluster.md``): a new run never reuses a run dir; SIGTERM saves the interrupted
stage, logs the command that resumes it and exits with status 143; a non-finite training loss stops
the run with the stage, step and value; ``status.json`` in the run dir records the outcome.

Examples::

    python -m experiments.train experiment=tagger                          # the main job
    python -m experiments.train -m experiment=tagger optimizer=adamw,sgd   # a sweep
    python -m experiments.train experiment=tagger run_dir=<old run> ckpt_path=last   # resume
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from experiments.common import PROJECT_ROOT, run_guarded  # noqa: F401  (PROJECT_ROOT: set before Hydra resolves paths)
from experiments.stages import run

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    summary = run_guarded("experiments.train", cfg, run)
    log.info("run dir:     %s", summary["run_dir"])
    log.info("metrics:     %s/metrics.json", summary["run_dir"])
    log.info("checkpoints: %s/checkpoints", summary["run_dir"])
    if "export" in summary:
        log.info("export:      %s", summary["export"])
    log.info("figures:     %s/figures", summary["run_dir"])
    for key, value in summary.get("test", {}).items():
        if key.endswith("/HF1") or key.endswith("mAP"):
            log.info("  %-28s %.4f", key, value)
    return summary["optimized_metric"]["value"]


if __name__ == "__main__":
    main()
