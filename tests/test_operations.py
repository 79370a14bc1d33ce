"""Operating the suite: kill and resume, DDP sweeps, W&B offline runs, Optuna, config errors."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, read_metrics, run_cli, small_twin_overrides

pytestmark = pytest.mark.slow


def tagger_overrides(synthetic_dir: Path, log_dir: Path, *extra: str) -> list[str]:
    return ["experiment=tagger", "export=false", *small_twin_overrides(synthetic_dir, log_dir), *extra]


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path, synthetic_dir):
    common = tagger_overrides(
        synthetic_dir,
        tmp_path,
        "run_stages=[image_cnn,tag_mlp]",
        "trainer.limit_train_batches=8",
        "stages.image_cnn.trainer.max_epochs=2",
        "stages.tag_mlp.trainer.max_epochs=8",
        "trainer.deterministic=true",
    )
    reference = tmp_path / "reference"
    run_cli("experiments.train", *common, f"run_dir={reference}")

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", *common, f"run_dir={killed}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = killed / "checkpoints" / "tag_mlp" / "last.ckpt"  # mid-way through the second stage
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"

    run_cli("experiments.train", *common, f"run_dir={killed}", "ckpt_path=last")
    expected, resumed = read_metrics(reference), read_metrics(killed)
    assert resumed["stages"]["tag_mlp"]["global_step"] == expected["stages"]["tag_mlp"]["global_step"] == 64
    assert resumed["test"].keys() == expected["test"].keys()
    for key, value in expected["test"].items():
        assert resumed["test"][key] == pytest.approx(value, abs=1e-6), key
    # the CSV curve of the resumed stage keeps the epochs logged before the kill, each once
    rows = (killed / "csv" / "tag_mlp" / "metrics.csv").read_text().splitlines()
    assert {int(r.split(",")[0]) for r in rows[1:] if r.split(",")[0]} >= set(range(8))
    with open(killed / "csv" / "tag_mlp" / "metrics.csv", newline="") as f:
        validated = [r["epoch"] for r in csv.DictReader(f) if r.get("val/loss")]
    assert validated == [str(e) for e in range(8)]


def test_ddp_sweep_runs_each_point_once_with_both_ranks(tmp_path, synthetic_dir):
    proc = run_cli(
        "experiments.train",
        "-m",
        *tagger_overrides(
            synthetic_dir,
            tmp_path,
            "run_stages=[image_cnn]",
            "debug=limit",
            "trainer=ddp_cpu",
            "optimizer=adamw,sgd",
        ),
    )
    out = proc.stdout + proc.stderr
    assert out.count("MEMBER: 2/2") == 2  # rank 1 of each point, started once
    sweeps = list((tmp_path / "debug" / "multiruns" / "tagger").iterdir())
    assert len(sweeps) == 1  # the children did not start sweeps of their own
    jobs = sorted(p.parent for p in sweeps[0].glob("*/metrics.json"))
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        assert len(list(job.rglob("metrics.json"))) == 1
        assert read_metrics(job)["stages"]["image_cnn"]["global_step"] == 6


def test_wandb_offline_run_holds_metrics_and_config(tmp_path, synthetic_dir):
    run_dir = tmp_path / "run"
    run_cli(
        "experiments.train",
        *tagger_overrides(
            synthetic_dir,
            tmp_path,
            "run_stages=[image_cnn]",
            "debug=limit",
            "logger=many_loggers",
            f"run_dir={run_dir}",
        ),
        env={"WANDB_SILENT": "true"},
    )
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # wandb >= 0.2x keeps an offline run in one binary transaction log (protobuf records; `wandb sync`
    # uploads it): the config keys, metric names and the figure must be in it.
    log = next(runs[0].glob("run-*.wandb")).read_bytes()
    for needle in (b"experiment_name", b"num_labels", b"val/HF1", b"test/HF1", b"train/loss_epoch"):
        assert needle in log, needle
    assert list((runs[0] / "files" / "media" / "images").rglob("examples_image_cnn*.png"))
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert (run_dir / "csv" / "image_cnn" / "hparams.yaml").exists()


def test_optuna_search_runs_three_trials(tmp_path, synthetic_dir):
    run_cli(
        "experiments.train",
        *tagger_overrides(
            synthetic_dir,
            tmp_path,
            "hparams_search=tagger_optuna",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2",
            "debug=limit",
        ),
    )
    sweep = next((tmp_path / "debug" / "multiruns" / "tagger").iterdir())
    values = [read_metrics(j.parent)["optimized_metric"]["value"] for j in sweep.glob("*/metrics.json")]
    assert len(values) == 3 and all(v is not None for v in values)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))


def test_config_typo_fails_before_any_data_is_touched(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            "experiment=tagger",
            "trainer.max_epoch=3",
            f"paths.synthetic_dir={tmp_path / 'never'}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Could not override 'trainer.max_epoch'" in proc.stderr
    assert not (tmp_path / "never").exists()
