"""Seed 003 trained and tested on 2 CPU processes (gloo DDP) through the real command line, with DBN and
with MGDA: the same test metrics and task weights as one process on the same global batches.

Why the runs can agree: the 2-process run takes batches of 16 per rank where the 1-process run takes 32,
and the training sampler gives rank r the positions r, r + 2, ... of the same permutation, so the two
ranks' batches together are the 1-process batch; the module scales each rank's task losses by its share
of the labelled samples (the counts summed over ranks), DBN sums its head gradients and MGDA its Gram
matrix over ranks, so the gradients and task weights are those of the 1-process step. The image encoder
is frozen (its batch norm then uses fixed statistics, not each rank's half batch) and nothing else in
the network depends on the batch. What remains is the order of floating-point sums (one sum of 32 terms
against two of 16): ~1e-7 per step.
"""

from pathlib import Path

import pytest
import torch

from tests.conftest import read_metrics, run_cli

pytestmark = pytest.mark.slow

TINY = [
    "data.synthetic.num_tweets=500",
    "data.synthetic.image_size=16",
    "augmentation.resize=16",
    "augmentation.crop=16",
    "model.net.freeze=[image]",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "callbacks.early_stopping=null",
    "callbacks.rich_progress_bar=null",
]
#: Task weights after 12 steps agree to float rounding; a test metric moves by one prediction's worth
#: (1/n of the ~100 labelled test samples per task) only if a logit near a tie flips, which rounding
#: at 1e-6 practically never does: the metrics must agree to 1e-6 as well.
WEIGHT_TOLERANCE = 1e-4
METRIC_TOLERANCE = 1e-6


def run(tmp_path: Path, synthetic_dir: Path, name: str, *overrides: str) -> dict:
    run_dir = tmp_path / name
    run_cli(
        "experiments.train",
        "experiment=crisismmd",
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"run_dir={run_dir}",
        *TINY,
        *overrides,
    )
    assert len(list(run_dir.rglob("metrics.json"))) == 1  # rank 0 alone writes the summary
    return read_metrics(run_dir)


@pytest.mark.parametrize("multitask", ["dbn", "mgda"])
def test_ddp_training_and_test_equal_one_process(multitask, tmp_path, synthetic_dir):
    one = run(
        tmp_path, synthetic_dir, "cpu", f"model.multitask={multitask}", "trainer=cpu", "data.batch_size=32"
    )
    two = run(
        tmp_path,
        synthetic_dir,
        "ddp",
        f"model.multitask={multitask}",
        "trainer=ddp_cpu",
        "data.batch_size=16",
    )
    assert one["stages"]["main"]["global_step"] == two["stages"]["main"]["global_step"] == 12
    states = [
        torch.load(r["stages"]["main"]["last_checkpoint"], map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        for r in (one, two)
    ]
    if multitask == "dbn":  # the weights moved, and moved alike
        weights = [s["task_weights.weights"] for s in states]
        assert not torch.allclose(weights[0], torch.ones(3))
        torch.testing.assert_close(weights[1], weights[0], atol=WEIGHT_TOLERANCE, rtol=0)
    head = [s["net.heads.humanitarian.weight"] for s in states]
    torch.testing.assert_close(head[1], head[0], atol=WEIGHT_TOLERANCE, rtol=0)
    assert one["test"].keys() == two["test"].keys()
    for key, value in one["test"].items():
        if key.endswith("loss"):  # a mean of per-batch means: the evaluation batches differ (32 vs 16)
            continue
        assert two["test"][key] == pytest.approx(value, abs=METRIC_TOLERANCE), key
