"""The tagger through the real command lines: every stage, the main job, sweeps, resume, export,
predict and DDP. Runs as a user would (``python -m experiments.<tool> ...``) with logs in tmp dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from datamodules.nuswide import load_index
from lit_modules.metrics import multilabel_annotation_scores
from lit_modules.prediction_rules import top_k_labels
from tests.conftest import evaluate_on_one_and_two_processes, only_run, read_metrics, run_cli

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------- main job
@pytest.fixture(scope="module")
def main_job(tmp_path_factory, synthetic_dir) -> Path:
    """The README's main job, unchanged but for where it writes."""
    logs = tmp_path_factory.mktemp("main_job")
    run_cli(
        "experiments.train",
        "experiment=tagger",
        f"paths.log_dir={logs}",
        f"paths.synthetic_dir={synthetic_dir}",
        timeout=1800,
    )
    return only_run(logs)


def trivial_hf1(index_path: Path) -> float:
    """H-F1 of a predictor without input: the k most frequent training labels for every test image,
    k = the rounded mean label count (the best of k = 1..4 is taken, to be generous)."""
    index = load_index(index_path)
    train_labels, _ = index.arrays("train")
    test_labels, _ = index.arrays("test")
    freq = torch.tensor(train_labels, dtype=torch.float).mean(0, keepdim=True)
    target = torch.tensor(test_labels, dtype=torch.long)
    scores = freq.expand(len(target), -1)
    return max(
        multilabel_annotation_scores(top_k_labels(scores, k), target)["HF1"].item() for k in (1, 2, 3, 4)
    )


def test_main_job_learns_and_composite_beats_image_cnn(main_job):
    summary = read_metrics(main_job)
    assert list(summary["stages"]) == ["image_cnn", "tag_mlp", "fusion", "label_count"]
    test = summary["test"]
    config = yaml.safe_load((main_job / "config.yaml").read_text())
    baseline = trivial_hf1(Path(config["data"]["index_path"]))
    assert test["test/composite/HF1"] > baseline + 0.2, (test["test/composite/HF1"], baseline)
    # The seed's finding (Table 5.1): the composite beats the image CNN alone with top-3.
    assert test["test/composite/HF1"] > test["test/image_topk/HF1"] + 0.03
    for key, value in test.items():
        assert value == value, f"{key} is NaN"
    for stage in summary["stages"].values():
        assert Path(stage["best_checkpoint"]).is_file()
    assert (main_job / "export" / "model.safetensors").is_file()
    assert (main_job / "figures" / "examples_label_count.png").is_file()
    assert (main_job / "csv" / "label_count" / "metrics.csv").is_file()


def test_export_round_trips_to_identical_predictions(main_job, tmp_path):
    from experiments.export import load_exported
    from lit_modules.tagger import apply_rule

    net, spec = load_exported(main_job / "export")
    best = read_metrics(main_job)["stages"]["label_count"]["best_checkpoint"]
    state = torch.load(best, map_location="cpu", weights_only=True)[
        "state_dict"
    ]  # plain tensors and values only
    reference, _ = load_exported(main_job / "export")
    reference.load_state_dict({k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")})
    reference.eval()
    g = torch.Generator().manual_seed(0)
    images, tags = torch.randn(16, 3, 64, 64, generator=g), (torch.rand(16, 1000, generator=g) < 0.01).float()
    with torch.inference_mode():
        a, b = net(images, tags), reference(images, tags)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(apply_rule(a, spec["model"]["rule"]), apply_rule(b, spec["model"]["rule"]))
    assert spec["model"]["rule"] == "composite" and len(spec["data"]["label_names"]) == 81


def test_predict_tags_a_folder(main_job, tmp_path):
    config = yaml.safe_load((main_job / "config.yaml").read_text())
    index = load_index(config["data"]["index_path"])
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for rec in index.split("test")[:6]:
        shutil.copy(Path(index.image_root) / rec.image, folder / Path(rec.image).name)
        rows.append(
            {"image": Path(rec.image).name, "tags": [index.tags[t] for t in rec.tags] + ["not-a-tag"]}
        )
    (tmp_path / "tags.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "preds.jsonl"
    run_cli(
        "experiments.predict",
        "--export",
        str(main_job / "export"),
        "--images",
        str(folder),
        "--tags",
        str(tmp_path / "tags.jsonl"),
        "--out",
        str(out),
    )
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(p["image"] for p in preds) == sorted(r["image"] for r in rows)
    for p in preds:
        assert 1 <= len(p["labels"]) == len(p["scores"]) and set(p["labels"]) <= set(index.concepts)
        assert p["scores"] == sorted(p["scores"], reverse=True)


def test_ddp_two_cpu_processes_give_the_same_test_metrics(main_job, tmp_path):
    ckpt = read_metrics(main_job)["stages"]["label_count"]["best_checkpoint"]
    synthetic_dir = yaml.safe_load((main_job / "config.yaml").read_text())["paths"]["synthetic_dir"]
    results = evaluate_on_one_and_two_processes(
        ckpt, ["experiment=tagger", f"paths.synthetic_dir={synthetic_dir}"], tmp_path
    )
    for key, value in results["cpu"].items():
        if key.endswith("loss") or key.endswith("count_mae"):  # means of per-batch means: batches differ
            continue
        assert results["ddp_cpu"][key] == pytest.approx(value, abs=1e-6), key
    assert results["cpu"]["test/composite/HF1"] == pytest.approx(
        read_metrics(main_job)["test"]["test/composite/HF1"]
    )
