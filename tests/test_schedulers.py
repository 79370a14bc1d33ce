"""Any scheduler works for any experiment: ``scheduler=cosine`` changes the learning rate of every
optimizer of every model, in every stage that has a scheduler, as the optimizers report it.

Every experiment of ``conf/experiment`` that is not a sweep runs here, one training step per epoch
for two epochs on a small synthetic twin; the real-data experiments run with their own model,
optimizers and stages, on the twin of their dataset with small offline networks.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import yaml

from experiments.stages import build_data_and_model, stage_configs
from tests.test_configs import CONF, compose_train

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(
    p.stem
    for p in Path(CONF, "experiment").glob("*.yaml")
    if (yaml.safe_load(p.read_text()) or {}).get("hydra", {}).get("mode") != "MULTIRUN"
)

TWINS = {  # the dataset -> its small twin (shared with the other tests of the session where possible)
    "nuswide": ["data=nuswide_synthetic", "data.synthetic.num_images=900", "data.synthetic.image_size=32"],
    "sun397": ["data=sun397_synthetic", "data.synthetic.images_per_class=6", "data.synthetic.image_size=32"],
    "crisismmd": [
        "data=crisismmd_synthetic",
        "data.synthetic.num_tweets=600",
        "data.synthetic.image_size=32",
    ],
    "imagenet_captions": ["data.synthetic.num_captions=300"],
    "coco": [
        "data=coco_synthetic",
        "data.synthetic.num_images=140",
        "data.synthetic.test_images=20",
        "data.synthetic.val_images=20",
    ],
}
SMALL_NETS = {  # real-data experiments: offline networks instead of the seeds' pretrained ones
    "tagger_nuswide": ["model.net.image_cnn.name=small_cnn", "model.net.image_cnn.weights=null"],
    "hashtag_sun397": ["model.net.backbone=small_cnn", "model.net.weights=null"],
    "crisismmd_real": [
        "model.net.image_encoder.name=small_cnn",
        "model.net.image_encoder.weights=null",
        "model.net.text_encoder.name=bilstm",
        "~model.net.text_encoder.freeze",
        "model.net.text_encoder.pooling=max",
        "model.net.freeze=[]",
    ],
    "relevance_imagenet_captions": [
        "data=imagenet_captions_synthetic",
        "model.net.text_encoder.name=roberta_small",
        "model.net.text_encoder.hidden=32",
        "model.net.text_encoder.layers=1",
        "model.net.text_encoder.heads=2",
        "model.net.text_encoder.intermediate=64",
    ],
    "retrieval_coco": [
        "model.net.image_backbone.width=8",
        "model.net.image_backbone.depth=2",
        "model.net.image_dim=32",
        "model.net.text_dim=32",
        "model.net.latent_dim=32",
    ],
}


def dataset_of(cfg) -> str:
    target = cfg.data._target_
    return next(name for name in TWINS if f".{name}" in target)


class LearningRates(L.Callback):
    """The learning rate of every optimizer's first group at the start of every training epoch."""

    def __init__(self) -> None:
        self.seen: list[list[float]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_cosine_changes_the_learning_rate_of_every_optimizer(experiment, synthetic_dir, tmp_path):
    base = compose_train(f"experiment={experiment}")
    overrides = [
        f"experiment={experiment}",
        "scheduler=cosine",
        "trainer.max_epochs=2",
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={tmp_path}",
        "augmentation.resize=32",
        "augmentation.crop=32",
        *TWINS[dataset_of(base)],
        *SMALL_NETS.get(experiment, []),
    ]
    cfg = compose_train(*overrides)
    checked = 0
    for name, stage_cfg in stage_configs(cfg):
        if not stage_cfg.get("scheduler"):
            continue  # a stage the experiment trains at a constant rate (e.g. the tagger's last)
        data, model = build_data_and_model(stage_cfg)
        rates = LearningRates()
        trainer = L.Trainer(
            max_epochs=2,
            limit_train_batches=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[rates],
            default_root_dir=tmp_path,
            use_distributed_sampler=False,
        )
        trainer.fit(model, datamodule=data)
        first, second = rates.seen
        assert len(first) == len(model.optimizer_parameters()), (name, first)
        for k, (before, after) in enumerate(zip(first, second)):
            assert after < before, f"{experiment}/{name}: optimizer {k} kept lr {before} under cosine"
        checked += 1
    assert checked, f"{experiment}: no stage has a scheduler"
