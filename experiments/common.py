"""Small utilities shared by the entry points: project root, rank-zero file writing, object
building from config."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: The repository root; configs resolve every path from it (``paths.root_dir``), never from the
#: working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(PROJECT_ROOT))

log = logging.getLogger(__name__)


def _stable_id(*parts: str) -> str:
    """A short id that is the same every time for the same parts (W&B run ids that resume)."""
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def _run_stamp() -> str:
    """The run dir's last part: the SLURM job (array task) id inside a SLURM job, so that a requeued
    job finds its own checkpoints again; the start time elsewhere."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}"
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


if not OmegaConf.has_resolver("stable_id"):
    OmegaConf.register_new_resolver("stable_id", _stable_id)
    OmegaConf.register_new_resolver("run_stamp", _run_stamp, use_cache=True)


def is_rank_zero() -> bool:
    """True in the process that writes summaries (rank 0, or the only process)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def atomic_write_text(path: Path, text: str) -> Path:
    """Write via a temporary file in the same folder + rename: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def to_float_dict(metrics: dict[str, Any], prefix: str | None = None) -> dict[str, float]:
    """Tensor-valued metric dicts (``trainer.callback_metrics``) -> plain floats, sorted by name."""
    out = {}
    for key in sorted(metrics):
        if prefix is None or key.startswith(prefix):
            value = metrics[key]
            out[key] = float(value.item() if hasattr(value, "item") else value)
    return out


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
    import sys

    wandb = sys.modules.get("wandb")  # never import it just to close it
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
