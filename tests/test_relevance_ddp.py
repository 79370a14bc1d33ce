"""The relevance classifier under DDP: 2 CPU processes (gloo) train and test through the real command
line and reach the test metrics of 1 process, and every parameter of the pretrained-encoder path gets
a gradient (a Hugging Face pooler would not, and DDP stops on it)."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import read_metrics, run_cli
from tests.test_configs import CONF

TWIN = ["data.synthetic.num_captions=300", "data.synthetic.num_classes=10"]


def split_sizes(synthetic_dir) -> tuple[int, int]:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train.yaml", overrides=["experiment=relevance", f"paths.synthetic_dir={synthetic_dir}", *TWIN]
        )
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    return len(datamodule.data_train), len(datamodule.data_test)


@pytest.mark.slow
def test_two_processes_train_and_test_as_one(synthetic_dir, tmp_path):
    """One process with batches of 32 and two with 16 each take the same optimizer steps on the same
    samples: the ranks split each epoch's draw (rank r takes every other index), pools of one batch
    keep a rank's batch the matching half of the single process's batch, and the batch order is
    shuffled with the same seed everywhere. Without dropout the gradients (a mean over 32 samples,
    or the mean of two means over 16, DDP's average) agree to float rounding; an epoch draws a
    multiple of 32 items so no batch is ragged."""
    n, n_test = split_sizes(synthetic_dir)
    fraction = (32 * int(0.75 * n // 32)) / n
    common = [
        "experiment=relevance",
        f"paths.synthetic_dir={synthetic_dir}",
        *TWIN,
        f"data.epoch_fraction={fraction!r}",
        "data.pool_batches=1",
        "model.net.dropout=0",
        "model.net.text_encoder.dropout=0",
        "trainer.max_epochs=2",
        "callbacks.rich_progress_bar=null",
    ]
    results = {}
    for trainer, batch in (("cpu", 32), ("ddp_cpu", 16)):
        run_dir = tmp_path / trainer
        run_cli(
            "experiments.train",
            *common,
            f"trainer={trainer}",
            f"data.batch_size={batch}",
            f"run_dir={run_dir}",
        )
        assert len(list(run_dir.rglob("metrics.json"))) == 1  # rank 0 alone writes the summary
        summary = read_metrics(run_dir)
        assert summary["stages"]["main"]["global_step"] == 2 * round(fraction * n) // 32
        results[trainer] = summary["test"]
    one, two = results["cpu"], results["ddp_cpu"]
    assert one.keys() == two.keys() and {"test/top1", "test/top5", "test/loss"} <= one.keys()
    # float rounding only: at most one test item may change its rank order; the loss to 1e-5
    for key in ("test/top1", "test/top5"):
        assert two[key] == pytest.approx(one[key], abs=1.01 / n_test), key
    assert two["test/loss"] == pytest.approx(one["test/loss"], abs=1e-5)


def test_pretrained_encoder_builds_no_pooler_and_every_parameter_learns(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lit_modules.relevance import RelevanceNet
    from lit_modules.text_encoders import build_text_encoder

    config = transformers.RobertaConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
    )
    transformers.RobertaModel(config).save_pretrained(tmp_path / "tiny")  # saved with a pooler
    net = RelevanceNet(build_text_encoder(str(tmp_path / "tiny"), pooling="mean", freeze=False), 3)
    assert not [name for name, _ in net.named_parameters() if "pooler" in name]
    ids = torch.randint(3, 60, (4, 7))
    torch.nn.functional.cross_entropy(
        net(ids, torch.ones_like(ids, dtype=torch.bool)), torch.arange(4) % 3
    ).backward()
    assert [name for name, p in net.named_parameters() if p.grad is None] == []
