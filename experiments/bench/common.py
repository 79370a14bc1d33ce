"""What the benchmarks share: the machine description, config composition, timing and memory
helpers, and the result writer."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from experiments.common import PROJECT_ROOT, atomic_write_text

CONF_DIR = PROJECT_ROOT / "conf"


def environment() -> dict[str, Any]:
    """The machine and versions a figure came from."""
    import lightning
    import torchvision

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read_lines("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    env = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        env.update(
            gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version()
        )
    return env


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def compose_experiment(experiment: str, overrides: Sequence[str] = ()) -> Any:
    """The resolved config of one stage of ``experiment`` as ``experiments.train`` would run it
    (the first stage unless ``run_stages=[...]`` names another)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from experiments.stages import stage_configs

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train.yaml", overrides=[f"experiment={experiment}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path(cfg.paths.log_dir) / "bench" / "runs" / experiment)
        cfg.paths.work_dir = str(PROJECT_ROOT)
        del cfg["hydra"]
    return stage_configs(cfg)[0][1]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_rss() -> int:
    """Reset the process's peak resident set size (Linux ``clear_refs``); return the current RSS in bytes."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Peak resident set size since the last :func:`reset_peak_rss`, in bytes (0 where unknown)."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in _read_lines("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_result(out_dir: Path, name: str, result: dict[str, Any]) -> Path:
    """``result.json`` (everything) and ``result.md`` (title, the table, notes, the machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "environment": environment(), **result}
    atomic_write_text(out_dir / "result.json", json.dumps(result, indent=2, default=str))
    env = result["environment"]
    machine = ", ".join(
        f"{k} {env[k]}" for k in ("cpu", "cpu_cores", "gpu", "torch", "lightning") if k in env
    )
    parts = [
        f"# bench {name}: {result.get('title', '')}",
        "",
        markdown_table(result["columns"], result["rows"]),
        "",
    ]
    parts += [f"- {note}" for note in result.get("notes", [])]
    parts += ["", f"Machine: {machine}; {env['date']}.", ""]
    atomic_write_text(out_dir / "result.md", "\n".join(parts))
    return out_dir
