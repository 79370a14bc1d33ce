"""experiments.report on hand-made run folders: one table per task, training time, percentages."""

from __future__ import annotations

import json

import yaml

from experiments.report import make_report

TABLES = [
    {"title": "Table 1: informative", "metrics": ["test/informative/F1_*", "test/informative/HL"]},
    {"title": "Table 2: damage", "metrics": ["test/damage/F1_macro"]},
]


def _job(root, n, fusion, f1, fit_minutes):
    job = root / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"ablation={fusion}", "seed=1"]))
    (job / "config.yaml").write_text(yaml.safe_dump({"report": {"title": "Tables", "tables": TABLES}}))
    test = {
        "test/informative/F1_macro": f1,
        "test/informative/F1_weighted": f1 + 0.1,
        "test/informative/HL": 0.25,
        "test/damage/F1_macro": f1 / 2,
        "test/damage/HL": 0.5,
    }
    (job / "metrics.json").write_text(json.dumps({"test": test, "fit_minutes": fit_minutes}))


def test_a_table_per_task_with_only_the_varying_overrides(tmp_path):
    _job(tmp_path, 0, "concat", 0.5, 1.5)
    _job(tmp_path, 1, "graph", 0.6, 2.0)
    md = make_report(tmp_path)["markdown"].read_text()
    first, second = md.split("## ")[1:]
    assert first.startswith("Table 1: informative") and second.startswith("Table 2: damage")
    assert (
        "| run | test/informative/F1_macro (%) | test/informative/F1_weighted (%) | test/informative/HL (%) |"
        in first
    )
    assert "| ablation=graph | 60.00 | 70.00 | 25.00 |" in first  # seed=1 is shared: left out of the label
    assert "| ablation=concat | 25.00 |" in second and "HL" not in second


def test_training_time_is_a_column_in_minutes_not_a_percentage(tmp_path):
    _job(tmp_path, 0, "concat", 0.5, 0.75)
    _job(tmp_path, 1, "graph", 0.6, 12.5)
    md = make_report(tmp_path, metrics=["test/damage/F1_macro", "fit_minutes"])["markdown"].read_text()
    assert "| ablation=concat | 25.00 | 0.75 |" in md and "| ablation=graph | 30.00 | 12.5 |" in md
    csv_rows = (tmp_path / "report" / "report.csv").read_text().splitlines()
    assert csv_rows[0] == "run,dir,test/damage/F1_macro,fit_minutes"


def test_a_reconstruction_error_is_not_a_percentage_and_its_lowest_value_is_best(tmp_path):
    runs = [("cycle", 1, 0.46), ("cycle", 2, 0.48), ("vsepp", 1, 0.28), ("vsepp", 2, 0.30)]
    for n, (fusion, seed, error) in enumerate(runs):
        _job(tmp_path, n, fusion, 0.5, 1.0)
        job = tmp_path / str(n)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"ablation={fusion}", f"seed={seed}"]))
        metrics = json.loads((job / "metrics.json").read_text())
        metrics["test"]["test/paired_reconstruction"] = error
        (job / "metrics.json").write_text(json.dumps(metrics))
    md = make_report(tmp_path, metrics=["test/paired_reconstruction"])["markdown"].read_text()
    assert "(%)" not in md
    assert "| ablation=cycle | 0.47 ± 0.01414 |" in md
    assert "| ablation=vsepp | **0.29 ± 0.01414** |" in md


def _seeded_job(root, n, fusion, seed, f1, max_epochs=12, best_epoch=10):
    job = root / str(n)
    (job / ".hydra").mkdir(parents=True)
    (job / "stages").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"ablation={fusion}", f"seed={seed}"]))
    (job / "config.yaml").write_text(yaml.safe_dump({"monitor": "val/loss"}))
    (job / "stages" / "main.config.yaml").write_text(yaml.safe_dump({"trainer": {"max_epochs": max_epochs}}))
    stage = {
        "epochs": max_epochs,
        "global_step": 10 * max_epochs,
        "best_checkpoint": f"/x/checkpoints/main/epoch_{best_epoch - 1:03d}.ckpt",
    }
    metrics = {"test": {"test/F1": f1, "test/loss": 1 - f1}, "stages": {"main": stage}}
    (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def test_seeds_are_aggregated_into_mean_sd_and_n_and_small_differences_are_marked(tmp_path):
    import statistics

    f1 = {"concat": [0.50, 0.60, 0.55], "graph": [0.58, 0.66, 0.61], "tensor": [0.80, 0.81, 0.82]}
    n = 0
    for fusion, values in f1.items():
        for seed, value in zip((1, 2, 3), values):
            _seeded_job(tmp_path, n, fusion, seed, value)
            n += 1
    md = make_report(tmp_path, metrics=["test/F1", "test/loss"])["markdown"].read_text()

    def cell(values):
        return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"

    # tensor is the best; graph differs from it by more than either spread; so does concat
    assert f"| ablation=tensor | **{cell(f1['tensor'])}** |" in md
    assert (
        f"| ablation=graph | {cell(f1['graph'])} |" in md
        and f"| ablation=concat | {cell(f1['concat'])} |" in md
    )
    assert " ~ |" not in md and "| 3 |" in md
    # a row within the spread of the best is marked
    for seed, value in zip((1, 2, 3), (0.70, 0.85, 0.78)):
        _seeded_job(tmp_path, n, "wide", seed, value)
        n += 1
    md = make_report(tmp_path, metrics=["test/F1"])["markdown"].read_text()
    wide = [0.70, 0.85, 0.78]
    assert abs(statistics.fmean(wide) - statistics.fmean(f1["tensor"])) <= statistics.stdev(wide)
    assert f"| ablation=wide | {cell(wide)} ~ | 3 |" in md
    summary = (tmp_path / "report" / "summary.csv").read_text().splitlines()
    assert summary[0] == "run,n,test/F1 mean,test/F1 sd" and len(summary) == 5
    # the budget is stated, with where the best checkpoints fell
    assert "Budget (every run): main: max_epochs=12 (120 steps run)" in md
    assert "Best checkpoint of main: epoch 10-10 (1-based) of 12" in md


def test_a_sweep_over_seeds_alone_is_one_row(tmp_path):
    import statistics

    values = [0.66, 0.69, 0.70]
    for n, (seed, value) in enumerate(zip((1, 2, 3), values)):
        _seeded_job(tmp_path, n, "composite", seed, value)
    md = make_report(tmp_path, metrics=["test/F1"])["markdown"].read_text()
    mean, sd = 100 * statistics.fmean(values), 100 * statistics.stdev(values)
    assert f"| seeds | {mean:.2f} ± {sd:.2f} | 3 |" in md


def test_best_checkpoints_at_the_end_of_the_budget_are_flagged(tmp_path):
    _seeded_job(tmp_path, 0, "concat", 1, 0.5, max_epochs=12, best_epoch=12)
    _seeded_job(tmp_path, 1, "graph", 1, 0.6, max_epochs=12, best_epoch=11)
    md = make_report(tmp_path, metrics=["test/F1"])["markdown"].read_text()
    assert "Best checkpoint of main: epoch 11-12 (1-based) of 12" in md
    assert "may not have converged" in md
    assert "One run per row: no spread measured" in md


def test_jobs_that_did_not_finish_are_listed_under_the_table(tmp_path):
    plan = [
        {"num": i, "overrides": [f"optimizer.lr={lr}"]} for i, lr in enumerate([1e-3, 1e-2, 1e38, 0.1, 1, 2])
    ]
    (tmp_path / "sweep.json").write_text(json.dumps({"jobs": plan}))
    _seeded_job(tmp_path, 0, "concat", 1, 0.5)
    failed = tmp_path / "1"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"status": "failed", "error": "OSError: disk full"}))
    diverged = tmp_path / "2"
    diverged.mkdir()
    loss = {"status": "diverged", "stage": "main", "step": 7, "loss": float("nan")}
    (diverged / "status.json").write_text(json.dumps(loss))
    interrupted = tmp_path / "3"
    interrupted.mkdir()
    (interrupted / "status.json").write_text(json.dumps({"status": "interrupted", "resume": "python -m x"}))
    killed = tmp_path / "4"
    killed.mkdir()  # SIGKILL: no summary, no status
    md = make_report(tmp_path, metrics=["test/F1"])["markdown"].read_text()
    table, listed = md.split("**Not in the table: 5 job(s)**")
    assert "optimizer.lr" not in table.split("|")[-2]  # only job 0 is a row
    assert "- job 1 `optimizer.lr=0.01`: failed (OSError: disk full)" in listed
    assert "- job 2 `optimizer.lr=1e+38`: diverged (stage main, step 7, loss nan)" in listed
    assert "- job 3 `optimizer.lr=0.1`: interrupted (resume: python -m x)" in listed
    assert "- job 4 `optimizer.lr=1`: incomplete" in listed and "- job 5 `optimizer.lr=2`: not run" in listed


def test_a_run_whose_metrics_are_not_finite_is_listed_as_diverged_not_tabled(tmp_path):
    _seeded_job(tmp_path, 0, "concat", 1, 0.5)
    _seeded_job(tmp_path, 1, "graph", 1, float("nan"))
    md = make_report(tmp_path, metrics=["test/F1"])["markdown"].read_text()
    assert "nan" not in md.split("**Not in the table")[0].lower()
    assert "- job 1 `ablation=graph seed=1`: diverged (metrics.json holds non-finite test metrics)" in md


def test_several_sweep_folders_make_one_report(tmp_path):
    import pytest

    first, second = tmp_path / "first", tmp_path / "second"
    plan = [{"num": i, "overrides": ["ablation=concat", f"seed={s}"]} for i, s in enumerate((1, 2, 3))]
    first.mkdir()
    (first / "sweep.json").write_text(json.dumps({"jobs": plan}))
    _seeded_job(first, 0, "concat", 1, 0.50)
    _seeded_job(first, 1, "concat", 2, 0.60)
    (first / "2").mkdir()  # killed: re-launched in the second folder, where it finished
    _seeded_job(second, 0, "concat", 3, 0.55)
    _seeded_job(second, 1, "graph", 1, 0.70)
    md = make_report([first, second], metrics=["test/F1"], out_dir=tmp_path / "out")["markdown"].read_text()
    assert "| ablation=concat | 55.00 ± 5.00 | 3 |" in md
    assert "| ablation=graph | **70.00** | 1 |" in md
    assert "Not in the table" not in md
    (second / "2").mkdir()  # a job that finished nowhere is listed with its folder
    (second / "2" / ".hydra").mkdir()
    (second / "2" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["ablation=graph", "seed=2"]))
    md = make_report([first, second], metrics=["test/F1"], out_dir=tmp_path / "out")["markdown"].read_text()
    assert "- job second/2 `ablation=graph seed=2`: incomplete" in md
    _seeded_job(tmp_path / "third", 0, "graph", 1, 0.71)  # the same job finished twice: which one counts?
    with pytest.raises(SystemExit, match="runs of the same job: ablation=graph seed=1"):
        make_report([first, second, tmp_path / "third"], metrics=["test/F1"], out_dir=tmp_path / "out")
