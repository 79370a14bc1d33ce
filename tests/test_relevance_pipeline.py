"""Seed 000 through the real command lines on a small ImageNet-Captions twin: build the dataset, train
the relevance classifier, score and filter every caption against the planted irrelevant ones."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments import build_relevance_dataset
from tests.conftest import only_run, read_metrics, run_cli

SMALL = [
    "data.synthetic.num_captions=900",
    "data.synthetic.num_classes=20",
    "trainer.max_epochs=8",
    "callbacks.rich_progress_bar=null",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, synthetic_dir) -> Path:
    logs = tmp_path_factory.mktemp("relevance")
    run_cli(
        "experiments.train",
        "experiment=relevance",
        f"paths.log_dir={logs}",
        f"paths.synthetic_dir={synthetic_dir}",
        *SMALL,
    )
    return only_run(logs)


@pytest.mark.slow
def test_training_beats_chance_and_exports_the_tokenizer(small_run):
    test = read_metrics(small_run)["test"]
    assert test["test/top1"] > 0.5 and test["test/top5"] > test["test/top1"] - 1e-6  # chance: 1/20
    spec = json.loads((small_run / "export" / "model.json").read_text())
    assert spec["data"]["text"]["kind"] == "byte_level_bpe" and len(spec["data"]["label_names"]) == 20


@pytest.fixture(scope="module")
def scored(small_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scored")
    run_cli("experiments.score_relevance", "--run", str(small_run), "--out", str(out), "--device", "cpu")
    return out


@pytest.mark.slow
def test_filter_drops_planted_irrelevant_captions(scored):
    out = scored
    counts = json.loads((out / "relevance_counts.json").read_text())
    assert counts["filter"]["recall"] > 0.8 and counts["filter"]["relevant_kept"] > 0.75, counts["filter"]
    kept = [json.loads(line) for line in (out / "kept_captions.jsonl").read_text().splitlines()]
    assert len(kept) == counts["rules"]["4_kept"] and max(k["coef"] for k in kept) == 1.0
    assert (
        all(0 < k["coef"] <= 1 and k["p"] >= 0.5 for k in kept) and (out / "coefficients_hist.png").is_file()
    )
    assert sum(c["captions"] for c in counts["per_class"].values()) == counts["captions"]


@pytest.mark.slow
def test_build_command_on_the_twin(small_run, tmp_path):
    root = Path(OmegaConf.load(small_run / "config.yaml").data.root)
    run_cli(
        "experiments.build_relevance_dataset",
        "--root",
        str(root),
        "--out",
        str(tmp_path),
        "--set",
        "max_sentences=3",
    )
    counts = json.loads((tmp_path / "relevance_counts.json").read_text())
    assert counts["items_train"] + counts["items_test"] == sum(
        c["captions"] * min(3, c["sentences"]) for c in counts["per_class"].values()
    )


def test_build_command_reports_bad_input(tmp_path, capsys):
    (tmp_path / "imagenet_captions.json").write_text(
        json.dumps(
            [
                {
                    "filename": "a.JPEG",
                    "wnid": "n01443537",
                    "title": "a goldfish",
                    "description": "",
                    "tags": [],
                }
            ]
        )
    )
    (tmp_path / "class_descriptions.json").write_text("")
    assert build_relevance_dataset.main(["--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "class_descriptions.json: empty file" in capsys.readouterr().err
    assert (
        build_relevance_dataset.main(
            ["--root", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "nope=1"]
        )
        == 2
    )


@pytest.mark.slow
def test_relevance_weighted_image_caption_classifier(scored, synthetic_dir, tmp_path):
    run_cli(
        "experiments.train",
        "experiment=relevance_weighting",
        "data.mode=weighted",
        f"data.relevance_file={scored / 'kept_captions.jsonl'}",
        f"paths.log_dir={tmp_path}",
        f"paths.synthetic_dir={synthetic_dir}",
        *SMALL[:2],
        "trainer.max_epochs=2",
        "callbacks.rich_progress_bar=null",
    )
    run = only_run(tmp_path)
    test = read_metrics(run)["test"]
    assert 0 <= test["test/top1"] <= test["test/top5"] <= 1
    # the exported model predicts from an image folder + captions given as user tags
    from experiments.export import load_exported
    from lit_modules.relevance.predict import predict_images

    net, spec = load_exported(run / "export")
    folder = Path(OmegaConf.load(run / "config.yaml").data.root) / "train"
    images = sorted(folder.rglob("*.JPEG"))[:3]
    rows = list(predict_images(net, spec, images, folder, {images[0].name: ["a", "goldfish"]}, top_k=2))
    assert spec["model"]["kind"] == "captioned_image_classifier" and len(rows) == 3
    assert [len(r["top"]) for r in rows] == [2, 2, 2] and rows[0]["top"][0]["name"] != rows[0]["top"][0][
        "wnid"
    ]
