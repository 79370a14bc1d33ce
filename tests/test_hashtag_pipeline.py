"""The hashtag classifier through the real command lines on a small synthetic SUN397 twin:
training learns, TTA and abstaining are reported, the export predicts a folder (with the inverse check)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import evaluate_on_one_and_two_processes, read_metrics, run_cli

pytestmark = pytest.mark.slow

SMALL = [
    "data.synthetic.images_per_class=24",
    "data.synthetic.image_size=32",
    "augmentation.resize=32",
    "augmentation.crop=32",
    "trainer.max_epochs=8",
    "model.tta_copies=4",
    "data.batch_size=32",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_dir) -> Path:
    logs = tmp_path_factory.mktemp("hashtag")
    run_dir = logs / "run"
    run_cli(
        "experiments.train",
        "experiment=hashtag",
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={logs}",
        f"run_dir={run_dir}",
        *SMALL,
    )
    return run_dir


def test_training_learns_and_reports_tta_and_abstaining(run):
    summary = read_metrics(run)
    test = summary["test"]
    present = 12  # hashtags (incl. other) of the twin's 32 scene classes: chance balanced accuracy 1/12
    assert test["test/balanced_acc"] > 3 / present, test
    for key in (
        "test/acc",
        "test/tta/acc",
        "test/tta/balanced_acc",
        "test/precision",
        "test/coverage",
        "test/tta/precision",
        "test/tta/coverage",
        "test/threshold",
        "test/val_precision",
        "test/aurc",
    ):
        assert key in test and test[key] == test[key], key
    if test["test/val_coverage"] > 0:  # the threshold met the target on the validation data it was chosen on
        assert test["test/val_precision"] >= 0.9 - 1e-6  # the calibration target, stored as float32
    assert summary["stages"]["main"]["monitor"] == "val/balanced_acc"
    for name in ("confusion_matrix.png", "confusion_matrix_tta.png", "risk_coverage.png"):
        assert (run / "figures" / name).is_file(), name
    spec = json.loads((run / "export" / "model.json").read_text())
    assert spec["model"]["kind"] == "hashtag_classifier" and spec["model"]["label_names"][-1] == "other"
    assert spec["data"]["transforms"]["k"] == 1


def test_predict_a_folder_with_the_inverse_check(run, tmp_path):
    from experiments import predict

    config = __import__("yaml").safe_load((run / "config.yaml").read_text())
    root = Path(config["data"]["root"]) / "SUN397"
    folder = tmp_path / "images"
    folder.mkdir()
    sources = {"forest.jpg": "f/forest/broadleaf", "shop.jpg": "s/shoe_shop", "pantry.jpg": "p/pantry"}
    for name, cls in sources.items():
        shutil.copy(sorted((root / cls).glob("*.jpg"))[0], folder / name)
    (tmp_path / "tags.jsonl").write_text(
        json.dumps({"image": "forest.jpg", "tags": ["#forest", "shopping", "love"]}) + "\n"
    )
    out = tmp_path / "preds.jsonl"
    predict.main(
        [
            "--export",
            str(run / "export"),
            "--images",
            str(folder),
            "--tags",
            str(tmp_path / "tags.jsonl"),
            "--out",
            str(out),
        ]
    )
    rows = {r["image"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == set(sources)
    for r in rows.values():
        assert r["hashtag"] is None or (r["hashtag"] == r["top"] and r["hashtag"] != "other")
        assert 0 <= r["confidence"] <= 1 and r["tta_copies"] == 4
    forest = rows["forest.jpg"]
    assert [c["tag"] for c in forest["tags_checked"]] == ["#forest", "shopping"] and forest[
        "unknown_tags"
    ] == ["love"]
    assert set(forest["implausible"]) <= {"#forest", "shopping"}
    assert "tags_checked" not in rows["shop.jpg"]


def test_ddp_two_cpu_processes_give_the_same_test_metrics(run, tmp_path, synthetic_dir):
    ckpt = read_metrics(run)["stages"]["main"]["best_checkpoint"]
    results = evaluate_on_one_and_two_processes(
        ckpt, ["experiment=hashtag", f"paths.synthetic_dir={synthetic_dir}", *SMALL], tmp_path
    )
    for key, value in results["cpu"].items():
        # TTA draws random augmentations (per rank under DDP) and the loss is a mean of batch means
        if "/tta/" in key or key.endswith("loss"):
            continue
        assert results["ddp_cpu"][key] == pytest.approx(value, abs=1e-6), key
