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
