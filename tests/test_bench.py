"""Every benchmark command runs on tiny sizes and writes its JSON and markdown (numbers are not
asserted: they are measurements of a noisy machine, read by people)."""

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

TINY_CRISISMMD = [
    "data.synthetic.num_tweets=400",
    "data.synthetic.image_size=32",
    "augmentation.resize=32",
    "augmentation.crop=32",
    "data.batch_size=8",
]
TINY_SUN397 = [
    "data.synthetic.images_per_class=6",
    "data.synthetic.image_size=32",
    "augmentation.resize=32",
    "augmentation.crop=32",
    "data.batch_size=8",
]


def bench(name: str, out: Path, *args: str) -> dict:
    run_cli("experiments.bench", name, "--out", str(out), *args, env={"OMP_NUM_THREADS": "1"})
    result = json.loads((out / "result.json").read_text())
    assert result["benchmark"] == name and result["rows"] and result["environment"]["torch"]
    assert (out / "result.md").read_text().startswith(f"# bench {name}")
    return result


@pytest.mark.slow
def test_overhead(tmp_path, synthetic_dir):
    result = bench(
        "overhead",
        tmp_path,
        "--experiments",
        "crisismmd",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--repeats",
        "1",
        *TINY_CRISISMMD,
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    row = result["rows"][0]
    assert row["bare_ms"] > 0 and row["suite_ms"] > 0 and "overhead_pct" in row and row["suite_breakdown"]


@pytest.mark.slow
def test_pipeline(tmp_path, synthetic_dir):
    result = bench(
        "pipeline",
        tmp_path,
        "--workers",
        "0",
        "--passes",
        "1",
        "--cache",
        "false",
        *TINY_SUN397,
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result["rows"][0]["bare_img_s"] > 0 and result["rows"][0]["suite_img_s"] > 0


@pytest.mark.slow
def test_metrics(tmp_path, synthetic_dir):
    result = bench(
        "metrics",
        tmp_path,
        "--experiments",
        "crisismmd",
        "--batches",
        "2",
        "--warmup",
        "1",
        *TINY_CRISISMMD,
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result["rows"][0]["metric_objects"] > 0 and result["rows"][0]["update_share_pct"] >= 0


@pytest.mark.slow
def test_retrieval(tmp_path):
    result = bench("retrieval", tmp_path, "--images", "40", "--dim", "8", "--repeats", "1")
    assert result["rows"][0]["captions"] == 200 and result["rows"][0]["seconds"] > 0


@pytest.mark.slow
def test_gpu_smoke_on_cpu(tmp_path):
    result = bench(
        "gpu",
        tmp_path,
        "--tiny",
        "--models",
        "resnet34",
        "--batch-size",
        "2",
        "--image-size",
        "32",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "1",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result["rows"][0]["suite_img_s"] > 0 and result["rows"][0]["gflops_per_image"] > 0


@pytest.mark.slow
def test_walltime(tmp_path, synthetic_dir):
    result = bench(
        "walltime",
        tmp_path,
        "--experiment",
        "crisismmd",
        "--tests",
        "--pytest-args",
        "tests/test_configs.py -k tagger_table",
        "debug=fdr",
        *TINY_CRISISMMD,
        f"paths.synthetic_dir={synthetic_dir}",
    )
    assert [r["exit_code"] for r in result["rows"]] == [0, 0]


@pytest.mark.slow
def test_relevance(tmp_path):
    result = bench(
        "relevance", tmp_path, "--captions", "40", "--batch-size", "8", "--max-length", "32", "--repeats", "1"
    )
    rows = {r["batching"]: r for r in result["rows"]}
    # the padding share is arithmetic, not timing: grouping by length must pad less
    assert rows["length_grouped"]["padding_share_pct"] < rows["pad_to_longest"]["padding_share_pct"]


@pytest.mark.slow
def test_scale(tmp_path):
    """A scale twin at a tiny fraction: every step runs in its own process and reports its figures."""
    result = bench(
        "scale", tmp_path / "out", "--datasets", "crisismmd", "--fraction", "0.005",
        "--root", str(tmp_path / "twins"), "--workers", "1",
    )  # fmt: skip
    for row in result["rows"]:
        assert not [k for k in row if k.endswith("_error")], row
        assert row["items"] > 0 and row["pass_batches"] > 0 and row["setup_peak_rss_mb"] > 0
        assert row["prepare+setup_cpu_s"] >= 0 and row["pass_worker_private_mb"] > 0
