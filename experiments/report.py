"""Compare the runs of a sweep: ``python -m experiments.report <multirun dir> [--metrics ...]``.

One row per run (labelled by its command-line overrides, those shared by all runs left out), the
chosen metrics as columns, written as ``report.md`` and ``report.csv``, plus ``val_curves.png``
with a validation curve per run. Metrics default to the sweep config's ``report.metrics`` (see
e.g. ``conf/experiment/tagger_table5_1.yaml``), else every test metric; ``report.tables`` (a list of
``{title, metrics}``) writes one table each instead, as a paper with a table per task does. Names
may be glob patterns (``'test/*/HF1'``); ``fit_minutes`` is the run's training time over all stages.
Values in [0, 1] named like scores are shown as percentages, as in the papers.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from experiments.common import atomic_write_text

log = logging.getLogger("report")


def find_runs(sweep_dir: Path) -> list[Path]:
    """Job folders of a Hydra multirun (those with a metrics.json), in job-number order."""
    runs = [p.parent for p in sweep_dir.glob("*/metrics.json")]
    if not runs and (sweep_dir / "metrics.json").exists():
        runs = [sweep_dir]
    return sorted(runs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def read_run(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    overrides_file = run / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    config_file = run / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.exists() else {}
    flat = dict(metrics.get("test", {}))
    if metrics.get("fit_minutes") is not None:
        flat["fit_minutes"] = metrics["fit_minutes"]
    value = (metrics.get("optimized_metric") or {}).get("value")
    if value is not None:
        flat["optimized_metric"] = value
    return {
        "dir": run,
        "overrides": overrides or [],
        "metrics": flat,
        "config": config or {},
        "summary": metrics,
    }


def row_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's overrides minus those every run shares (the sweep's varying parameters)."""
    common = set.intersection(*(set(r["overrides"]) for r in runs)) if runs else set()
    labels = []
    for r in runs:
        own = [o for o in r["overrides"] if o not in common]
        labels.append(" ".join(own) or r["dir"].name)
    return labels


def select_metrics(runs: list[dict[str, Any]], patterns: list[str] | None) -> list[str]:
    available: list[str] = []
    for r in runs:
        available += [k for k in r["metrics"] if k not in available]
    if not patterns:
        configured = (runs[0]["config"].get("report") or {}).get("metrics") if runs else None
        patterns = configured or [k for k in available if k.startswith("test/")]
    chosen: list[str] = []
    for pattern in patterns:
        chosen += [k for k in available if fnmatch.fnmatchcase(k, pattern) and k not in chosen]
    return chosen


def _fmt(name: str, value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def _is_score(name: str) -> bool:
    return not any(
        word in name.lower() for word in ("loss", "mae", "medr", "seconds", "minutes", "optimized")
    )


def render_markdown(runs: list[dict[str, Any]], metrics: list[str], title: str, level: int = 1) -> str:
    percent = {m: _is_score(m) and all(0 <= r["metrics"].get(m, 0) <= 1 for r in runs) for m in metrics}
    header = ["run"] + [m + (" (%)" if percent[m] else "") for m in metrics]
    md = [f"{'#' * level} {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in zip(row_labels(runs), runs):
        md.append(
            "| " + " | ".join([label] + [_fmt(m, r["metrics"].get(m), percent[m]) for m in metrics]) + " |"
        )
    return "\n".join(md) + "\n"


def render_csv(runs: list[dict[str, Any]], metrics: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "dir"] + metrics)
    for label, r in zip(row_labels(runs), runs):
        writer.writerow([label, str(r["dir"])] + [r["metrics"].get(m, "") for m in metrics])
    return buf.getvalue()


def read_curve(run: Path, metric: str) -> tuple[list[float], list[float]]:
    """``(epochs, values)`` of ``metric`` from the last stage's CSV log of a run."""
    logs = sorted((run / "csv").glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return [], []
    epochs, values = [], []
    with logs[-1].open() as f:
        for row in csv.DictReader(f):
            if row.get(metric) not in (None, ""):
                epochs.append(float(row.get("epoch") or len(epochs)))
                values.append(float(row[metric]))
    return epochs, values


def plot_curves(runs: list[dict[str, Any]], metric: str, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for label, r in zip(row_labels(runs), runs):
        x, y = read_curve(r["dir"], metric)
        if x:
            ax.plot(x, y, marker="o", markersize=3, label=label)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return _save_axes(fig, ax, "epoch", metric, path)


def _save_axes(fig: Any, ax: Any, xlabel: str, ylabel: str, path: Path) -> Path:
    """Label, grid and legend the axes, save the figure to ``path`` and close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _run_value(run: dict[str, Any], dotted: str) -> Any:
    """A run's command-line value of ``dotted`` (a config group choice such as ``model``), else its config value."""
    for override in run["overrides"]:
        if override.startswith(f"{dotted}="):
            return override.split("=", 1)[1]
    config = run["config"]
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def plot_against(runs: list[dict[str, Any]], spec: dict[str, str], path: Path) -> Path | None:
    """A test metric against a swept config value, one line per value of ``group`` (e.g. R@5 against
    the paired fraction per model): ``report.against: [{x: data.paired_fraction, y: test/i2t_r5, group: model}]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        x, y = _run_value(r, spec["x"]), r["summary"].get("test", {}).get(spec["y"])
        if x is None or y is None:
            continue
        group = str(_run_value(r, spec["group"])) if spec.get("group") else spec["y"]
        lines.setdefault(group, []).append((float(x), float(y)))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=group)
    return _save_axes(fig, ax, spec["x"], spec["y"], path)


def make_report(
    sweep_dir: Path, metrics: list[str] | None = None, curve: str | None = None, out_dir: Path | None = None
) -> dict[str, Path]:
    runs = [read_run(r) for r in find_runs(sweep_dir)]
    if not runs:
        raise SystemExit(f"no runs with a metrics.json under {sweep_dir}")
    out_dir = out_dir or sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_cfg = runs[0]["config"].get("report") or {}
    title = (
        report_cfg.get("title")
        or f"{runs[0]['summary'].get('experiment') or sweep_dir.name}: {sweep_dir.name}"
    )
    tables = report_cfg.get("tables") if metrics is None else None
    if tables:
        parts = [(t["title"], select_metrics(runs, t["metrics"])) for t in tables]
        md = f"# {title}\n\n" + "\n".join(render_markdown(runs, cols, sub, level=2) for sub, cols in parts)
        chosen = [m for _, cols in parts for m in cols if m]
    else:
        chosen = select_metrics(runs, metrics)
        md = render_markdown(runs, chosen, title)
    written = {
        "markdown": atomic_write_text(out_dir / "report.md", md),
        "csv": atomic_write_text(out_dir / "report.csv", render_csv(runs, list(dict.fromkeys(chosen)))),
    }
    curve = curve or report_cfg.get("curve") or runs[0]["config"].get("monitor") or "val/loss"
    figure = plot_curves(runs, curve, out_dir / "val_curves.png")
    if figure:
        written["figure"] = figure
    for k, spec in enumerate(report_cfg.get("against") or []):
        name = f"{spec['y'].replace('/', '_')}_vs_{spec['x'].replace('.', '_')}.png"
        if plot_against(runs, spec, out_dir / name):
            written[f"against{k}"] = out_dir / name
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (logs/train/multiruns/<name>/<time>)")
    parser.add_argument("--metrics", nargs="+", default=None, help="metric names or glob patterns (columns)")
    parser.add_argument(
        "--curve", default=None, help="validation metric to plot per epoch (default: the monitor)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <sweep_dir>/report)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = make_report(args.sweep_dir, args.metrics, args.curve, args.out)
    print(written["markdown"].read_text())
    for kind, path in written.items():
        log.info("%-8s %s", kind, path)


if __name__ == "__main__":
    main()
