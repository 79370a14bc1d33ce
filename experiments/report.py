"""Compare the runs of a sweep: ``python -m experiments.report <multirun dir>... [--metrics ...]``.

One row per configuration (labelled by its command-line overrides, those shared by all runs left
out), the chosen metrics as columns, written as ``report.md``, plus ``report.csv`` (one line per
run) and ``val_curves.png`` with a validation curve per run. Metrics default to the sweep config's
``report.metrics`` (see e.g. ``conf/experiment/tagger_table5_1.yaml``), else every test metric;
``report.tables`` (a list of ``{title, metrics}``) writes one table each instead, as a paper with a
table per task does. Names may be glob patterns (``'test/*/HF1'``); ``fit_minutes`` is the run's
training time over all stages. Values in [0, 1] named like scores are shown as percentages, as in
the papers.

Statistics: runs that differ only by ``seed`` form one row, shown as mean +- sample standard
deviation with the number of runs ``n`` (``summary.csv`` holds the numbers). In each column the best
row is in bold, and a row whose mean is within the spread of the best (the difference is at most
the larger of the two standard deviations) is marked ``~``: that difference is not a finding. The
training budget (epochs and steps per stage, and the epochs of the best checkpoints) is stated next
to the tables. Jobs of the sweep that are not in the tables (not run, killed, failed, diverged or
interrupted: ``sweep.json`` lists the planned jobs, each job's ``status.json`` its outcome) are
listed under them.

Several multirun folders make one report, as one sweep would (rows or seeds added later, or a sweep
re-launched for the jobs a first launch did not finish): a job that did not finish in one folder but
finished in another is not listed; two finished runs with the same overrides are an error.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import logging
import math
import re
import statistics
from pathlib import Path
from typing import Any

import yaml

from experiments.common import STATUS_FILE, SWEEP_PLAN, atomic_write_text, doc_parser, read_json_or

log = logging.getLogger("report")


def find_runs(sweep_dir: Path) -> list[Path]:
    """Job folders of a Hydra multirun with a usable ``metrics.json``, in job-number order (a run whose
    test metrics are not finite, as a diverged run wrote them, is left to :func:`problem_jobs`)."""
    runs = [p.parent for p in sweep_dir.glob("*/metrics.json") if not _diverged_metrics(p.parent)]
    if not runs and (sweep_dir / "metrics.json").exists():
        runs = [sweep_dir]
    return sorted(runs, key=_job_order)


def _job_order(p: Path) -> tuple[bool, int, str]:
    return (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)


def _diverged_metrics(run: Path) -> bool:
    test = read_json_or(run / "metrics.json", {}).get("test", {})
    return any(isinstance(v, float) and not math.isfinite(v) for v in test.values())


_NOT_SETTINGS = ("run_dir", "ckpt_path")


def read_run(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    # where a run was written or resumed from is not part of its configuration
    overrides = [o for o in _overrides(run) if o.split("=", 1)[0].lstrip("+~") not in _NOT_SETTINGS]
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
        "overrides": overrides,
        "metrics": flat,
        "config": config or {},
        "summary": metrics,
    }


# ------------------------------------------------------------------------------ jobs not in the table
def problem_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's jobs without a usable summary: ``{"job", "overrides", "outcome", "detail"}`` with
    outcome ``not run``, ``interrupted``, ``failed``, ``diverged`` or ``incomplete`` (a folder without
    summary or status: killed, or still running). Planned jobs come from ``sweep.json``; without it,
    from the numbered job folders."""
    planned = read_json_or(sweep_dir / SWEEP_PLAN, {}).get("jobs")
    if planned is None:
        numbered = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=_job_order)
        planned = [{"num": int(p.name), "overrides": _overrides(p)} for p in numbered]
    out = []
    for job in planned:
        folder = sweep_dir / str(job["num"])
        outcome, detail = _outcome(folder)
        if outcome is not None:
            out.append(
                {"job": job["num"], "overrides": job["overrides"], "outcome": outcome, "detail": detail}
            )
    return out


def _overrides(folder: Path) -> list[str]:
    path = folder / ".hydra" / "overrides.yaml"
    return (yaml.safe_load(path.read_text()) or []) if path.exists() else []


def _outcome(folder: Path) -> tuple[str | None, str]:
    if not folder.is_dir():
        return "not run", ""
    if (folder / "metrics.json").exists():
        return (
            ("diverged", "metrics.json holds non-finite test metrics")
            if _diverged_metrics(folder)
            else (None, "")
        )
    status = read_json_or(folder / STATUS_FILE)
    if status is None:
        return "incomplete", f"{folder}: no summary and no status (killed, or still running)"
    kind = status.get("status", "incomplete")
    if kind == "diverged":
        return kind, f"stage {status.get('stage')}, step {status.get('step')}, loss {status.get('loss')}"
    if kind == "interrupted":
        return kind, "resume: " + status["resume"] if status.get("resume") else "nothing saved"
    return kind, str(status.get("error", ""))


def render_problems(problems: list[dict[str, Any]]) -> str:
    if not problems:
        return ""
    lines = ["", f"**Not in the table: {len(problems)} job(s)**", ""]
    for p in problems:
        detail = f" ({p['detail']})" if p["detail"] else ""
        lines.append(f"- job {p['job']} `{' '.join(p['overrides'])}`: {p['outcome']}{detail}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ rows and seeds
def _is_seed(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") == "seed"


def _varying(runs: list[dict[str, Any]]) -> list[list[str]]:
    """Each run's overrides minus those every run shares (the sweep's varying parameters)."""
    common = set.intersection(*(set(r["overrides"]) for r in runs)) if runs else set()
    return [[o for o in r["overrides"] if o not in common] for r in runs]


def row_labels(runs: list[dict[str, Any]]) -> list[str]:
    """Each run's varying overrides (its folder name when none vary)."""
    return [" ".join(own) or r["dir"].name for r, own in zip(runs, _varying(runs))]


def group_by_seed(runs: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Runs that differ only by ``seed``, as ``(label, runs)`` in first-seen order; the label is the
    varying overrides without the seed ("seeds" when the seed is all that varies, as in a sweep of one
    configuration over seeds; a run's folder name when nothing varies)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r, own in zip(runs, _varying(runs)):
        label = " ".join(o for o in own if not _is_seed(o))
        if not label:
            label = "seeds" if own else (r["dir"].name if len(runs) > 1 else "run")
        groups.setdefault(label, []).append(r)
    if len(groups) == 1 and len(runs) == 1:
        return [(row_labels(runs)[0], runs)]
    return list(groups.items())


def _stats(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (``None`` below two values) and ``n``."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None), len(values)


def select_metrics(runs: list[dict[str, Any]], patterns: list[str] | None) -> list[str]:
    available = list(dict.fromkeys(k for r in runs for k in r["metrics"]))
    if not patterns:
        configured = (runs[0]["config"].get("report") or {}).get("metrics") if runs else None
        patterns = configured or [k for k in available if k.startswith("test/")]
    chosen = (k for pattern in patterns for k in available if fnmatch.fnmatchcase(k, pattern))
    return list(dict.fromkeys(chosen))


def _fmt(value: float | None, percent: bool) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


#: Words of metric names that are not scores in [0, 1] and whose lower values are better.
_LOWER_IS_BETTER = ("loss", "mae", "medr", "reconstruction", "error", "seconds", "minutes")


def _is_score(name: str) -> bool:
    return not any(word in name.lower() for word in (*_LOWER_IS_BETTER, "optimized"))


def _lower_is_better(name: str) -> bool:
    lowered = name.lower()
    return any(w in lowered for w in _LOWER_IS_BETTER) or lowered.endswith("/hl")


def render_markdown(runs: list[dict[str, Any]], metrics: list[str], title: str, level: int = 1) -> str:
    percent = {m: _is_score(m) and all(0 <= r["metrics"].get(m, 0) <= 1 for r in runs) for m in metrics}
    groups = group_by_seed(runs)
    repeated = any(len(members) > 1 for _, members in groups)
    header = ["run"] + [m + (" (%)" if percent[m] else "") for m in metrics] + (["n"] if repeated else [])
    md = [f"{'#' * level} {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    stats = {
        (label, m): _stats([r["metrics"][m] for r in members if r["metrics"].get(m) is not None])
        for label, members in groups
        for m in metrics
        if any(r["metrics"].get(m) is not None for r in members)
    }
    best = {}
    for m in metrics:
        means = {label: stats[(label, m)][0] for label, _ in groups if (label, m) in stats}
        if len(means) > 1:
            best[m] = (min if _lower_is_better(m) else max)(means, key=means.get)
    for label, members in groups:
        cells = [label]
        for m in metrics:
            if (label, m) not in stats:
                cells.append("-")
                continue
            mean, sd, _ = stats[(label, m)]
            cell = _fmt(mean, percent[m])
            if repeated and sd is not None:
                cell += f" ± {_fmt(sd, percent[m])}"
            if repeated and best.get(m) == label:
                cell = f"**{cell}**"
            elif repeated and m in best:
                best_mean, best_sd, _ = stats[(best[m], m)]
                if sd is not None and best_sd is not None and abs(mean - best_mean) <= max(sd, best_sd):
                    cell += " ~"
            cells.append(cell)
        if repeated:
            cells.append(str(len(members)))
        md.append("| " + " | ".join(cells) + " |")
    if repeated:
        md += [
            "",
            "mean ± sample standard deviation over the seeds of each row (n runs); **bold**: the best "
            "row; ~: within the spread of the best (difference <= the larger standard deviation), not "
            "a difference this sweep can claim.",
        ]
    elif len(runs) > 1:
        md += ["", "One run per row: no spread measured, so no difference in this table is a finding."]
    return "\n".join(md) + "\n"


def render_csv(runs: list[dict[str, Any]], metrics: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "dir"] + metrics)
    for label, r in zip(row_labels(runs), runs):
        writer.writerow([label, str(r["dir"])] + [r["metrics"].get(m, "") for m in metrics])
    return buf.getvalue()


def render_summary_csv(runs: list[dict[str, Any]], metrics: list[str]) -> str:
    """One line per row of the table: ``n`` and each metric's mean and sample standard deviation."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["run", "n"] + [f"{m} {stat}" for m in metrics for stat in ("mean", "sd")])
    for label, members in group_by_seed(runs):
        row: list[Any] = [label, len(members)]
        for m in metrics:
            values = [r["metrics"][m] for r in members if r["metrics"].get(m) is not None]
            mean, sd, _ = _stats(values) if values else (None, None, 0)
            row += ["" if mean is None else mean, "" if sd is None else sd]
        writer.writerow(row)
    return buf.getvalue()


# ------------------------------------------------------------------------------ budget
_EPOCH_IN_NAME = re.compile(r"epoch[_=]?(\d+)")


def run_budget(run: Path) -> tuple[str, list[tuple[str, int, int]]]:
    """``(budget, best)`` of a run: the budget per stage as text (``max_epochs``/``max_steps`` and
    the batches per epoch when limited) and ``(stage, best epoch, epochs run)`` of each stage whose
    best checkpoint names its epoch."""
    summary = read_json_or(run / "metrics.json")
    if summary is None:
        return "", []
    parts, best = [], []
    for name, stage in (summary.get("stages") or {}).items():
        config_file = run / "stages" / f"{name}.config.yaml"
        trainer = (
            (yaml.safe_load(config_file.read_text()) or {}).get("trainer", {}) if config_file.exists() else {}
        )
        budget = f"max_epochs={trainer.get('max_epochs')}"
        if trainer.get("max_steps") not in (None, -1):
            budget += f", max_steps={trainer['max_steps']}"
        if trainer.get("limit_train_batches") not in (None, 1.0):
            budget += f", limit_train_batches={trainer['limit_train_batches']}"
        parts.append(f"{name}: {budget} ({stage.get('global_step')} steps run)")
        found = _EPOCH_IN_NAME.search(Path(stage.get("best_checkpoint") or "").name)
        if found and stage.get("epochs"):
            best.append((name, int(found.group(1)) + 1, int(stage["epochs"])))
    return "; ".join(parts), best


def render_budget(runs: list[dict[str, Any]]) -> str:
    """The training budget next to the tables, and where the best checkpoints fell in it."""
    budgets: dict[str, list[str]] = {}
    best: dict[str, list[tuple[int, int]]] = {}
    for label, r in zip(row_labels(runs), runs):
        text, stage_best = run_budget(r["dir"])
        budgets.setdefault(text, []).append(label)
        for name, epoch, epochs in stage_best:
            best.setdefault(name, []).append((epoch, epochs))
    lines = []
    if len(budgets) == 1:
        lines.append(f"Budget (every run): {next(iter(budgets))}")
    else:
        lines += [f"Budget of {', '.join(labels)}: {text}" for text, labels in budgets.items()]
    late = []
    for name, pairs in best.items():
        epochs, budget = sorted(e for e, _ in pairs), max(n for _, n in pairs)
        lines.append(f"Best checkpoint of {name}: epoch {epochs[0]}-{epochs[-1]} (1-based) of {budget}")
        if any(n > 2 and e > n - 2 for e, n in pairs):
            late.append(name)
    if late:
        lines.append(
            f"Best checkpoints in the last two epochs ({', '.join(late)}): the validation metric may not "
            "have converged; a longer budget would tell."
        )
    return "\n".join(f"{line}  " for line in lines) + "\n"


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
    curves = [(label, read_curve(r["dir"], metric)) for label, r in zip(row_labels(runs), runs)]
    curves = [(label, (x, y)) for label, (x, y) in curves if x]
    if not curves:
        return None
    fig, ax = _new_axes((7, 4.5))
    for label, (x, y) in curves:
        ax.plot(x, y, marker="o", markersize=3, label=label)
    return _save_axes(fig, ax, "epoch", metric, path)


def _new_axes(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A figure and its axes, drawn off screen (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


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
    """A run's command-line value of ``dotted`` (a config group choice such as ``model``), else its
    config value."""
    for override in run["overrides"]:
        if override.startswith(f"{dotted}="):
            return override.split("=", 1)[1]
    config = run["config"]
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def plot_against(runs: list[dict[str, Any]], spec: dict[str, str], path: Path) -> Path | None:
    """A test metric against a swept config value, one line per value of ``group`` (e.g. R@5 against
    the paired fraction per model):
    ``report.against: [{x: data.paired_fraction, y: test/i2t_r5, group: model}]``."""
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        x, y = _run_value(r, spec["x"]), r["summary"].get("test", {}).get(spec["y"])
        if x is None or y is None:
            continue
        group = str(_run_value(r, spec["group"])) if spec.get("group") else spec["y"]
        lines.setdefault(group, []).append((float(x), float(y)))
    if not lines:
        return None
    fig, ax = _new_axes((6, 4))
    for group, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", label=group)
    return _save_axes(fig, ax, spec["x"], spec["y"], path)


def collect(sweep_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished runs of one or more multirun folders and the jobs without a finished run."""
    runs: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], Path] = {}
    for sweep_dir in sweep_dirs:
        for run in map(read_run, find_runs(sweep_dir)):
            key = tuple(sorted(run["overrides"]))
            if key in seen and len(sweep_dirs) > 1:
                raise SystemExit(f"{seen[key]} and {run['dir']} are runs of the same job: {' '.join(key)}")
            seen[key] = run["dir"]
            runs.append(run)
        # a single run's folder has no jobs; a sweep's lists those not in the table
        if not (sweep_dir / "metrics.json").exists():
            for job in problem_jobs(sweep_dir):
                if len(sweep_dirs) > 1:
                    job["job"] = f"{sweep_dir.name}/{job['job']}"
                problems.append(job)
    # a job planned by several launches and finished by none is listed once, from the last launch
    unfinished = {tuple(sorted(job["overrides"])): job for job in problems}
    return runs, [job for key, job in unfinished.items() if key not in seen]


def make_report(
    sweep_dir: Path | list[Path],
    metrics: list[str] | None = None,
    curve: str | None = None,
    out_dir: Path | None = None,
) -> dict[str, Path]:
    sweep_dirs = [sweep_dir] if isinstance(sweep_dir, Path) else list(sweep_dir)
    sweep_dir = sweep_dirs[0]
    runs, problems = collect(sweep_dirs)
    if not runs:
        listed = render_problems(problems)
        names = ", ".join(map(str, sweep_dirs))
        raise SystemExit(f"no runs with a metrics.json under {names}" + (f"\n{listed}" if listed else ""))
    out_dir = out_dir or sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_cfg = runs[0]["config"].get("report") or {}
    title = (
        report_cfg.get("title")
        or f"{runs[0]['summary'].get('experiment') or sweep_dir.name}: {sweep_dir.name}"
    )
    tables = report_cfg.get("tables") if metrics is None else None
    budget = render_budget(runs)
    if tables:
        parts = [(t["title"], select_metrics(runs, t["metrics"])) for t in tables]
        md = f"# {title}\n\n{budget}\n" + "\n".join(
            render_markdown(runs, cols, sub, level=2) for sub, cols in parts
        )
        chosen = [m for _, cols in parts for m in cols if m]
    else:
        chosen = select_metrics(runs, metrics)
        table = render_markdown(runs, chosen, title)
        heading, _, rest = table.partition("\n\n")
        md = f"{heading}\n\n{budget}\n{rest}"
    md += render_problems(problems)
    columns = list(dict.fromkeys(chosen))
    written = {
        "markdown": atomic_write_text(out_dir / "report.md", md),
        "csv": atomic_write_text(out_dir / "report.csv", render_csv(runs, columns)),
        "summary": atomic_write_text(out_dir / "summary.csv", render_summary_csv(runs, columns)),
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
    parser = doc_parser(__doc__)
    parser.add_argument(
        "sweep_dir",
        type=Path,
        nargs="+",
        help="multirun folders (logs/train/multiruns/<name>/<time>): one report",
    )
    parser.add_argument("--metrics", nargs="+", default=None, help="metric names or glob patterns (columns)")
    parser.add_argument(
        "--curve", default=None, help="validation metric to plot per epoch (default: the monitor)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <first sweep_dir>/report)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = make_report(args.sweep_dir, args.metrics, args.curve, args.out)
    print(written["markdown"].read_text())
    for kind, path in written.items():
        log.info("%-8s %s", kind, path)


if __name__ == "__main__":
    main()
