"""The tagger's stages through the real command lines on a small twin: each stage, one stage from a
checkpoint, resume, a sweep and its report, Table 5.1 (the main job: tests/test_tagger_pipeline.py)."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from tests.conftest import only_run, read_metrics, run_cli, small_twin_overrides

pytestmark = pytest.mark.slow


def test_fast_dev_run_of_every_stage(tmp_path, synthetic_dir):
    run_cli(
        "experiments.train", "experiment=tagger", "debug=fdr", *small_twin_overrides(synthetic_dir, tmp_path)
    )
    summary = read_metrics(only_run(tmp_path))
    assert list(summary["stages"]) == ["image_cnn", "tag_mlp", "fusion", "label_count"]
    for name, stage in summary["stages"].items():
        assert stage["global_step"] == 1, name
        assert "test/HF1" in stage["test"], name


def test_one_stage_alone_from_a_checkpoint(tmp_path, synthetic_dir):
    first = tmp_path / "first"
    common = ["experiment=tagger", "debug=limit", *small_twin_overrides(synthetic_dir, tmp_path)]
    run_cli("experiments.train", *common, "run_stages=[image_cnn,tag_mlp]", f"run_dir={first}")
    ckpt = read_metrics(first)["stages"]["tag_mlp"]["best_checkpoint"]
    second = tmp_path / "second"
    run_cli("experiments.train", *common, "run_stages=[fusion]", f"init_ckpt={ckpt}", f"run_dir={second}")
    summary = read_metrics(second)
    assert list(summary["stages"]) == ["fusion"]
    # image CNN and tag MLP came from the checkpoint, so the fusion's own rule and theirs are scored
    assert {"test/image_topk/HF1", "test/tags_topk/HF1", "test/fusion_topk/HF1"} <= set(summary["test"])


def test_resume_from_last_continues_the_step_count(tmp_path, synthetic_dir):
    run_dir = tmp_path / "run"
    common = [
        "experiment=tagger",
        "run_stages=[image_cnn]",
        "debug=limit",
        f"run_dir={run_dir}",
        *small_twin_overrides(synthetic_dir, tmp_path),
    ]
    run_cli("experiments.train", *common, "trainer.max_epochs=2")
    first = read_metrics(run_dir)["stages"]["image_cnn"]
    assert first["global_step"] == 6  # 2 epochs x 3 batches (debug=limit)
    resumed = run_cli("experiments.train", *common, "trainer.max_epochs=4", "ckpt_path=last")
    second = read_metrics(run_dir)["stages"]["image_cnn"]
    assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
    assert second["global_step"] == 12 and second["epochs"] == 4


def test_sweep_over_two_optimizers_and_report(tmp_path, synthetic_dir):
    run_cli(
        "experiments.train",
        "-m",
        "experiment=tagger",
        "optimizer=adamw,sgd",
        "run_stages=[image_cnn]",
        "debug=limit",
        *small_twin_overrides(synthetic_dir, tmp_path),
    )
    sweep_dirs = [p for p in (tmp_path / "debug" / "multiruns" / "tagger").iterdir() if p.is_dir()]
    assert len(sweep_dirs) == 1
    jobs = sorted(p.parent for p in sweep_dirs[0].glob("*/metrics.json"))
    assert len(jobs) == 2
    optimizers = {yaml.safe_load((j / "config.yaml").read_text())["optimizer"]["_target_"] for j in jobs}
    assert optimizers == {"torch.optim.AdamW", "torch.optim.SGD"}
    run_cli(
        "experiments.report", str(sweep_dirs[0]), "--metrics", "test/HF1", "test/image/mAP", "fit_minutes"
    )
    report = (sweep_dirs[0] / "report" / "report.md").read_text()
    assert "optimizer=adamw" in report and "optimizer=sgd" in report
    rows = list(csv.reader((sweep_dirs[0] / "report" / "report.csv").read_text().splitlines()))
    assert rows[0][2:] == ["test/HF1", "test/image/mAP", "fit_minutes"] and len(rows) == 3
    for job, row in zip(jobs, rows[1:]):  # the training time over the stages, in minutes
        stages = read_metrics(job)["stages"]
        assert float(row[4]) == pytest.approx(sum(s["fit_seconds"] for s in stages.values()) / 60, abs=1e-3)


def test_table5_1_scores_every_row_on_one_trained_image_cnn(tmp_path, synthetic_dir):
    run_dir = tmp_path / "table"
    run_cli(
        "experiments.train",
        "experiment=tagger_table5_1",
        "hydra.mode=RUN",  # one seed of the sweep
        "seed=3",
        "debug=limit",
        f"run_dir={run_dir}",
        *small_twin_overrides(synthetic_dir, tmp_path),
    )
    summary = read_metrics(run_dir)
    stages = summary["stages"]
    assert list(stages) == ["image_cnn", "tag_mlp", "fusion", "label_count", "image_label_count"]
    # Each row's score in the last test equals the score of the stage that trained its last part:
    # the later stages changed none of its parts.
    for rule, stage in [
        ("image_topk", "image_cnn"),
        ("fusion_topk", "fusion"),
        ("composite", "label_count"),
        ("image_count", "image_label_count"),
    ]:
        for metric in ("CP", "CR", "OP", "OR", "HF1"):
            key = f"test/{rule}/{metric}"
            assert summary["test"][key] == pytest.approx(stages[stage]["test"][key], abs=1e-6), key
    first = torch.load(stages["image_cnn"]["best_checkpoint"], map_location="cpu", weights_only=True)
    last = torch.load(stages["image_label_count"]["best_checkpoint"], map_location="cpu", weights_only=True)
    cnn = [k for k in first["state_dict"] if k.startswith("net.image_cnn.")]
    assert cnn and all(torch.equal(first["state_dict"][k], last["state_dict"][k]) for k in cnn)
