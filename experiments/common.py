"""Small utilities shared by the entry points: project root, run and sweep folders (unique names, claimed
exclusively), rank-zero file writing, object building from config, the run's outcome record."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import shlex
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from datamodules.errors import DatasetFormatError
from datamodules.files import atomic_write_text, read_json_or

__all__ = ["atomic_write_text"]  # re-exported: the entry points' one writer (datamodules/files.py)

#: The repository root; configs resolve every path from it (``paths.root_dir``), never from the
#: working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))

log = logging.getLogger(__name__)

#: Written (exclusively) into a run dir by the run that owns it; a new run never reuses a claimed dir.
CLAIM_FILE = ".run.json"
#: A sweep's plan (its jobs and their overrides), written into the sweep dir before any job starts.
SWEEP_PLAN = "sweep.json"
#: A job's outcome: completed, failed, diverged or interrupted (with the command that resumes it).
STATUS_FILE = "status.json"
#: Exit status of a run stopped by SIGTERM (128 + 15, what a shell reports for a signalled process).
EXIT_SIGTERM = 143


def _stable_id(*parts: str) -> str:
    """A short id that is the same every time for the same parts (W&B run ids that resume)."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _run_stamp() -> str:
    """The last part of a new run (or sweep) dir.

    Inside a SLURM job the job (array task) id: every node and task of the job agrees on it, and a
    requeued job finds its own checkpoints again. Under ``torchrun --rdzv-id=<id>`` that id, which
    every node shares. Elsewhere the start time plus 24 random bits, so that two runs started in the
    same second (two jobs of an array, two users) get different dirs; the dir is then claimed
    exclusively (:class:`RunDirClaim`), so even a collision cannot mix two runs.
    """
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}"
    if env.get("TORCHELASTIC_RUN_ID", "none") not in ("", "none"):
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    return f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"


if not OmegaConf.has_resolver("stable_id"):
    OmegaConf.register_new_resolver("stable_id", _stable_id)
    OmegaConf.register_new_resolver("run_stamp", _run_stamp, use_cache=True)


def is_rank_zero() -> bool:
    """True in the process that writes summaries (rank 0, or the only process)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def is_launch_rank_zero() -> bool:
    """True unless a launcher started this process as a rank other than 0 (Lightning's DDP children,
    SLURM tasks, torchrun workers, other nodes): readable before any trainer exists."""
    names = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") in ("", "0") for name in names)


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)


def to_float_dict(metrics: dict[str, Any], prefix: str | None = None) -> dict[str, float]:
    """Tensor-valued metric dicts (``trainer.callback_metrics``) -> plain floats, sorted by name."""
    return {
        key: float(value.item() if hasattr(value, "item") else value)
        for key, value in sorted(metrics.items())
        if prefix is None or key.startswith(prefix)
    }


def doc_parser(doc: str | None) -> argparse.ArgumentParser:
    """A command's argument parser whose ``--help`` shows its module docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def print_counts(
    work: Callable[[], dict], errors: tuple[type[Exception], ...] = (DatasetFormatError,)
) -> int:
    """Run ``work`` (a command's whole job), print its counts (without a per-class table) and return
    the exit status: 2 with the file and entry at fault when the input is malformed (``errors``)."""
    try:
        counts = work()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in counts.items() if k != "per_class"}, indent=2))
    return 0


def build(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with plain containers (``_convert_="all"``): every object of the
    suite is built here, so no reader or module converts ``DictConfig`` values by hand, and
    checkpoints hold plain values."""
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all", **kwargs)


def instantiate_list(cfg: DictConfig | None) -> list[Any]:
    """Build every ``_target_`` node of a callbacks/loggers config group (``null`` entries skipped)."""
    if not cfg:
        return []
    return [build(node) for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def save_resolved_config(cfg: DictConfig, path: Path) -> None:
    if is_rank_zero():
        atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def finish_wandb() -> None:
    """Close the W&B run if one is open, so the next stage or sweep point starts its own."""
    wandb = sys.modules.get("wandb")  # never import it just to close it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


# ---------------------------------------------------------------------------------- run dirs
class RunDirInUse(SystemExit):
    """A new run (or sweep) was pointed at a folder another run owns. A ``SystemExit`` (status 1, the
    message on stderr): Hydra turns an ``Exception`` raised in a callback into a warning and goes on."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def is_requeued_slurm_job() -> bool:
    """A SLURM job started again by ``scontrol requeue`` (or a node failure): it continues its run dir."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def _claim_record() -> str:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now().isoformat(timespec="seconds"),
            "command": sys.argv,
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
        },
        indent=2,
    )


def claim_dir(folder: Path, *, reuse: bool, what: str, key: str) -> None:
    """Make ``folder`` this run's own: create it and its claim file exclusively (``O_EXCL``), so of two
    runs that picked the same folder exactly one goes on. ``reuse`` (an explicit resume, a requeued
    SLURM job) takes over an existing folder instead. Raises :class:`RunDirInUse` naming ``key``."""
    folder = Path(folder)
    if reuse:
        if not folder.is_dir():
            raise RunDirInUse(
                f"{key}={folder}: no such folder, so nothing to resume (ckpt_path=last continues the "
                f"{what} in {key}; check the path)"
            )
        atomic_write_text(folder / CLAIM_FILE, _claim_record())
        return
    hint = (
        f"{key}={folder} already holds another {what}; a new {what} never reuses a folder. Resume it "
        f"with ckpt_path=last, or leave {key} out (every run gets a new one) or name a new one."
    )
    folder.mkdir(parents=True, exist_ok=True)
    # The claim file decides; what the other ranks of this same job may already have put there (Hydra's
    # .hydra/ and log) does not count. A folder of a run made before claims existed has other files.
    if any(p.name not in (CLAIM_FILE, ".hydra") and p.suffix != ".log" for p in folder.iterdir()):
        raise RunDirInUse(hint)
    try:
        fd = os.open(folder / CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise RunDirInUse(hint) from None
    with os.fdopen(fd, "w") as f:
        f.write(_claim_record())


class RunDirClaim(HydraCallback):
    """Hydra callback (``conf/hydra/default.yaml``): claims the run dir before Hydra writes anything
    into it, and the sweep dir before the first job of a sweep starts (then writes the sweep's plan,
    :data:`SWEEP_PLAN`, which ``experiments.report`` and an interrupted sweep read).

    Reuse is allowed only through an explicit resume (``ckpt_path=last``) or a SLURM requeue. Ranks
    other than 0 (DDP children, other SLURM tasks or nodes) join the dir rank 0 claimed.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_launch_rank_zero():
            return
        reuse = (
            OmegaConf.select(config, "ckpt_path", throw_on_missing=False) == "last" or is_requeued_slurm_job()
        )
        claim_dir(Path(str(config.hydra.run.dir)), reuse=reuse, what="run", key="run_dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        resume = "ckpt_path=last" in list(config.hydra.overrides.task) or is_requeued_slurm_job()
        claim_dir(sweep_dir, reuse=resume, what="sweep", key="hydra.sweep.dir")
        if not (sweep_dir / SWEEP_PLAN).exists():
            write_json(sweep_dir / SWEEP_PLAN, sweep_plan(config))


def sweep_plan(config: DictConfig) -> dict[str, Any]:
    """The jobs a sweep will run, ``{"jobs": [{"num", "overrides"}], ...}``, as Hydra's basic sweeper
    expands them (its ``params`` and the command line's comma lists, cartesian product); ``jobs`` is
    ``None`` for sweepers that decide as they go (Optuna), with their trial count when known."""
    sweeper = config.hydra.sweeper
    plan: dict[str, Any] = {
        "command": sys.argv,
        "sweeper": sweeper.get("_target_"),
        "launcher": config.hydra.launcher.get("_target_"),
        "jobs": None,
    }
    if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        params += list(config.hydra.overrides.task)
        loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
        try:
            overrides = OverridesParser.create(config_loader=loader).parse_overrides(params)
            batches = BasicSweeper.split_arguments(overrides, None)
        except Exception as err:  # a plan is a convenience: never stop a sweep for it
            log.warning("could not expand the sweep's jobs in advance (%s)", err)
            return plan
        jobs = [job for batch in batches for job in batch]
        plan["jobs"] = [{"num": i, "overrides": list(o)} for i, o in enumerate(jobs)]
    else:
        plan["n_trials"] = sweeper.get("n_trials")
    return plan


# ---------------------------------------------------------------------------------- run outcome
def job_overrides() -> list[str]:
    """This job's command-line overrides (a sweep job's own values), as typed."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def command_line(module: str, overrides: list[str]) -> str:
    """A shell command that runs ``module`` with ``overrides``, quoted for copy and paste."""
    return " ".join([shlex.quote(sys.executable), "-m", module, *map(shlex.quote, overrides)])


def resume_command(module: str, run_dir: Path) -> str:
    """The command that resumes this job's run in ``run_dir`` (``ckpt_path=last``)."""
    keep = [o for o in job_overrides() if o.split("=", 1)[0].lstrip("+~") not in ("run_dir", "ckpt_path")]
    return command_line(module, [*keep, f"run_dir={run_dir}", "ckpt_path=last"])


def has_resumable_state(run_dir: Path) -> bool:
    """Whether ``ckpt_path=last`` would find anything in ``run_dir``."""
    return any(run_dir.glob("checkpoints/*/last.ckpt")) or any(run_dir.glob("hpc_ckpt_*.ckpt"))


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    """Record the job's outcome (rank 0): ``completed``, ``failed``, ``diverged`` or ``interrupted``."""
    if is_rank_zero() and run_dir.is_dir():
        write_json(run_dir / STATUS_FILE, {"status": status, **details})


def jobs_not_run(run_dir: Path) -> list[dict[str, Any]] | None:
    """For a job of a sweep run one job after another (Hydra's basic launcher): the planned jobs after
    this one, which an interruption of this job leaves unrun. ``None`` when that is not known."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    if not str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher"):
        return None
    planned = read_json_or(Path(str(hydra_cfg.sweep.dir)) / SWEEP_PLAN, {}).get("jobs")
    if planned is None:
        return None
    return [job for job in planned if job["num"] > int(hydra_cfg.job.num)]


def exit_interrupted(module: str, run_dir: Path) -> None:
    """After a SIGTERM: record it, log how to go on (the exact resume command, the sweep's jobs that
    did not run) and exit with status 143, so a scheduler, a shell or a sweep sees a failure."""
    if is_rank_zero():
        details: dict[str, Any] = {"signal": "SIGTERM"}
        if module == "experiments.train" and has_resumable_state(run_dir):
            details["resume"] = resume_command(module, run_dir)
            log.error("interrupted by SIGTERM; resume this run with:\n  %s", details["resume"])
        else:
            keep = [o for o in job_overrides() if o.split("=", 1)[0] not in ("run_dir", "ckpt_path")]
            details["rerun"] = command_line(module, keep)
            log.error(
                "interrupted by SIGTERM before anything resumable was saved; run again with:\n  %s",
                details["rerun"],
            )
        remaining = jobs_not_run(run_dir)
        if remaining is not None:
            details["jobs_not_run"] = remaining
            listed = "\n".join(f"  #{job['num']}: {' '.join(job['overrides'])}" for job in remaining)
            log.error(
                "the sweep stopped here; %d job(s) did not run:\n%s", len(remaining), listed or "  (none)"
            )
        write_status(run_dir, "interrupted", **details)
    raise SystemExit(EXIT_SIGTERM)


def run_guarded(module: str, cfg: DictConfig, body: Callable[[DictConfig], Any]) -> Any:
    """Run an entry point's ``body(cfg)`` with the suite's handling of faults: DDP children run this
    job only; SIGTERM ends in :func:`exit_interrupted` (status 143, resume command); the outcome is
    recorded in the run dir's :data:`STATUS_FILE` (``completed``, ``diverged`` with the stage, step
    and loss, ``failed`` with the error); W&B and the DDP launcher's state are cleaned up on every
    path, so the next job of a sweep starts clean."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from experiments.ddp import reset_launcher_environment, use_job_command_for_children
    from lit_modules.callbacks import NonFiniteLossError, install_sigterm_handler

    run_dir = Path(cfg.paths.output_dir)
    use_job_command_for_children()
    install_sigterm_handler()
    try:
        result = body(cfg)
    except SIGTERMException:
        exit_interrupted(module, run_dir)
    except NonFiniteLossError as err:
        write_status(run_dir, "diverged", error=str(err), **err.details())
        raise
    except Exception as err:
        write_status(run_dir, "failed", error=f"{type(err).__name__}: {err}")
        raise
    finally:
        finish_wandb()
        reset_launcher_environment()
    write_status(run_dir, "completed")
    return result
