"""The cycle-consistent embedder through the real command line on the synthetic COCO twin."""

from __future__ import annotations

import csv
import json
import re
from math import comb

import lightning as L
import pytest
import torch

from experiments.stages import build_data, stage_configs
from tests.conftest import evaluate_on_one_and_two_processes, run_cli
from tests.test_configs import compose_train

TEST_IMAGES = 500  # conf/data/coco_synthetic.yaml


def chance_rsum(n: int) -> float:
    """rsum of a random embedding: an image query hits if any of its 5 captions is in the top K of
    5n (``1 - C(5n-5, K) / C(5n, K)``), a caption query if its image is in the top K of n."""
    i2t = sum(1 - comb(5 * n - 5, k) / comb(5 * n, k) for k in (1, 5, 10))
    t2i = sum(k / n for k in (1, 5, 10))
    return 100 * (i2t + t2i)


def train(synthetic_dir, tmp_path, name: str, *overrides: str) -> dict:
    run_dir = tmp_path / name
    run_cli(
        "experiments.train",
        "experiment=retrieval",
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"run_dir={run_dir}",
        "seed=0",
        *overrides,
    )
    return json.loads((run_dir / "metrics.json").read_text())


TINY_TWIN = ("data.synthetic.num_images=140", "data.synthetic.test_images=20", "data.synthetic.val_images=20")


@pytest.mark.slow
def test_autoencoder_stage_hands_over_its_best_reconstruction(synthetic_dir, tmp_path) -> None:
    """The autoencoder stage's checkpoint is the epoch of least val/auto (its latent maps are random,
    so rsum would pick noise), and the latent stage starts from exactly those autoencoder weights."""
    train(synthetic_dir, tmp_path, "run", "data.paired_fraction=0.25", "trainer.max_epochs=3", *TINY_TWIN)
    stages = tmp_path / "run" / "stages"
    auto, latent = (json.loads((stages / f"{s}.json").read_text()) for s in ("autoencoders", "latent"))
    with open(tmp_path / "run" / "csv" / "autoencoders" / "metrics.csv") as f:
        val = {int(r["epoch"]): float(r["val/auto"]) for r in csv.DictReader(f) if r["val/auto"]}
    best_epoch = min(val, key=val.get)
    assert auto["monitor"] == "val/auto" and len(val) == 3
    assert auto["best_checkpoint"].endswith(f"epoch_{best_epoch:03d}.ckpt")
    assert auto["best_score"] == pytest.approx(val[best_epoch])
    assert latent["monitor"] == "val/rsum"
    handed = torch.load(auto["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(latent["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    autoencoders = ("image_encoder", "image_decoder", "text_encoder", "text_decoder")
    frozen = [k for k in handed if k.split(".")[1] in autoencoders]
    assert frozen and all(torch.equal(handed[k], after[k]) for k in frozen)


def test_vsepp_trains_on_full_batches_of_pairs_and_picks_every_stage_by_rsum(synthetic_dir) -> None:
    """ablation=retrieval_vsepp implies data.use_unpaired=false: the training set is the pairs alone."""
    cfg = compose_train(
        "experiment=retrieval",
        "ablation=retrieval_vsepp",
        "data.paired_fraction=0.25",
        f"paths.synthetic_dir={synthetic_dir}",
        *TINY_TWIN,
    )
    assert [(c.monitor, c.monitor_mode) for _, c in stage_configs(cfg)] == [("val/rsum", "max")] * 3
    data = build_data(cfg)
    paired = len(data.pairs[0])
    assert len(data.data_train) == paired and all(data.data_train[k]["paired"] for k in range(paired))
    cycle = build_data(
        compose_train(
            "experiment=retrieval",
            "data.paired_fraction=0.25",
            f"paths.synthetic_dir={synthetic_dir}",
            *TINY_TWIN,
        )
    )
    assert len(cycle.data_train) == paired + len(
        cycle.pairs[1]
    )  # the cycle model also gets every unpaired row


@pytest.mark.slow
def test_cycle_model_learns_from_a_quarter_of_the_pairs_without_collapse(synthetic_dir, tmp_path) -> None:
    """p = 0.25, the three stages with every term: test retrieval far above chance, and the joint
    stage ends with the latents spread out (not collapsed onto one point; with hardest negatives the
    monitor's collapse flag is 0). Whether the unpaired rows help is a comparison over seeds: the
    ``retrieval_sweep`` experiment and its report, not this test."""
    short = ("stages.autoencoders.trainer.max_epochs=5", "stages.latent.trainer.max_epochs=8")
    cycle = train(
        synthetic_dir,
        tmp_path,
        "cycle",
        "data.paired_fraction=0.25",
        *short,
        "stages.joint.trainer.max_epochs=15",
    )
    assert list(cycle["stages"]) == ["autoencoders", "latent", "joint"]
    assert cycle["test"]["test/rsum"] > 3 * chance_rsum(TEST_IMAGES)
    with open(tmp_path / "cycle" / "csv" / "joint" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    collapsed = [float(r["train/retrieval_collapsed"]) for r in rows if r.get("train/retrieval_collapsed")]
    spread = [float(r["train/latent_spread"]) for r in rows if r.get("train/latent_spread")]
    assert spread[-1] > 0.1 and (not collapsed or collapsed[-1] == 0.0)


class SameWeightsOnEveryRank(L.Callback):
    """After each stage's fit: the largest difference between any rank's parameters and rank 0's,
    appended by rank 0 to ``out`` as ``<world size> <difference>``."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        gathered = trainer.strategy.all_gather(flat).reshape(trainer.world_size, -1)
        if trainer.is_global_zero:
            with open(self.out, "a") as f:
                f.write(f"{trainer.world_size} {float((gathered - gathered[0]).abs().max())}\n")


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_with_critics_and_test_like_one(synthetic_dir, tmp_path) -> None:
    """trainer=ddp_cpu (2 gloo processes) through the command line, all three stages of the cycle model
    with its critics (manual optimisation, two optimisers, the module's own gradient averaging; both
    batch kinds at p = 0.5). Tolerances: the ranks hold the same weights after every stage
    (difference exactly 0: without the averaging they part after the first step); the checkpoint
    scores the same test metrics on one and on two processes (R@K and median ranks identical,
    reconstruction means within 1e-6: sums in another order). Training on two processes is not the
    one-process run bit for bit (each rank ranks its own half batch against its own negatives and
    keeps its own batch-norm statistics, as DDP does), so no equality with a one-process training is
    claimed; learning is tested in one process above."""
    weights_log = tmp_path / "ranks.txt"
    ddp = train(
        synthetic_dir,
        tmp_path,
        "ddp",
        "trainer=ddp_cpu",
        "data.batch_size=8",
        "data.paired_fraction=0.5",
        "trainer.max_epochs=1",
        "callbacks.rich_progress_bar=null",
        "+callbacks.same_weights._target_=tests.test_retrieval_pipeline.SameWeightsOnEveryRank",
        f"+callbacks.same_weights.out={weights_log}",
        *TINY_TWIN,
    )
    assert list(ddp["stages"]) == ["autoencoders", "latent", "joint"]
    lines = weights_log.read_text().split()
    assert lines[0::2] == ["2"] * 3 and all(float(d) == 0.0 for d in lines[1::2])
    results = evaluate_on_one_and_two_processes(
        ddp["stages"]["joint"]["best_checkpoint"],
        ["experiment=retrieval", f"paths.synthetic_dir={synthetic_dir}", *TINY_TWIN],
        tmp_path / "evaluate",
    )
    for key, value in results["cpu"].items():
        if re.search(r"_r\d+$", key) or key.endswith(("rsum", "medr")):  # counts: exact
            assert results["ddp_cpu"][key] == value, key
        else:
            assert results["ddp_cpu"][key] == pytest.approx(value, abs=1e-6), key
