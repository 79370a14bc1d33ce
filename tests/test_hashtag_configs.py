"""The hashtag classifier's configs against the seed (002) and its author's code: the 2019 ImageNet
weights, Inception v3 at 256 px, the batch sizes, the seeds of the table sweeps, the twin's Table 4,
and the augmentation strength k as an unrounded float."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from tests.test_configs import CONF, TABLE4, compose_train

TABLE3_ROWS = ["inception_v3", "vgg11", "vgg13", "resnet18", "resnet34", "resnet50"]
SWEEPS = ["hashtag_table3", "hashtag_table3_twin", "hashtag_table4", "hashtag_table4_twin"]


@pytest.mark.parametrize("row", TABLE3_ROWS)
def test_table3_rows_are_the_authors_networks_at_256(row):
    cfg = compose_train("experiment=hashtag_table3", f"ablation=hashtag_{row}")
    net = cfg.model.net
    assert net.weights == "IMAGENET1K_V1"  # torchvision's pretrained=True, the author's code (2019)
    assert net.backbone == (f"{row}_bn" if row.startswith("vgg") else row)
    assert cfg.augmentation.resize == cfg.augmentation.crop == 256 and cfg.augmentation.k == 0
    assert cfg.data.batch_size == 190 and cfg.optimizer._target_ == "torch.optim.Adam"
    if row == "inception_v3":
        assert net.aux_logits is False


def test_resnet50_weights_are_v1_not_the_default():
    weights = torchvision.models.get_model_weights("resnet50")
    assert weights["IMAGENET1K_V1"] is not weights.DEFAULT


def test_main_job_batch_sizes():
    assert compose_train("experiment=hashtag_sun397").data.batch_size == 48  # 512 px: a quarter of 190
    assert compose_train("experiment=hashtag").data.batch_size == 32  # the twin's main job


def sweep_params(experiment: str) -> dict:
    """A sweep config's ``hydra.sweeper.params``, or its parent sweep's when it declares none."""
    data = yaml.safe_load(Path(CONF, "experiment", f"{experiment}.yaml").read_text())
    params = data.get("hydra", {}).get("sweeper", {}).get("params")
    if params is None:
        return sweep_params(next(d for d in data["defaults"] if isinstance(d, str)))
    return params


@pytest.mark.parametrize("sweep", SWEEPS)
def test_table_sweeps_run_every_row_with_three_seeds(sweep):
    params = sweep_params(sweep)
    assert params["seed"] == "0,1,2" and "ablation" in params


@pytest.mark.slow  # 22 compositions
@pytest.mark.parametrize("row", sorted(TABLE4))
def test_twin_table4_rows_change_what_the_seeds_rows_change(row):
    real = compose_train("experiment=hashtag_table4", f"ablation=hashtag_table4_row{row:02d}")
    twin = compose_train("experiment=hashtag_table4_twin", f"ablation=hashtag_table4_row{row:02d}")
    assert twin.optimizer == real.optimizer and twin.scheduler == real.scheduler
    assert twin.augmentation.k == real.augmentation.k and twin.augmentation.keep_aspect is False
    assert twin.augmentation.resize == twin.augmentation.crop == real.augmentation.resize // 16
    assert twin.data._target_ == real.data._target_ and twin.data.synthetic is not None
    assert twin.callbacks.early_stopping == real.callbacks.early_stopping
    assert twin.model.net.backbone == "small_cnn" and twin.model.net.weights is None


@pytest.mark.slow  # two Inception v3 networks
def test_inception_v3_runs_at_256_without_its_auxiliary_head():
    from lit_modules.hashtag import HashtagClassifier, HashtagNet

    net = HashtagNet("inception_v3", num_classes=21, aux_logits=False).train()
    assert net(torch.zeros(2, 3, 256, 256)).shape == (2, 21)
    with_aux = HashtagNet("inception_v3", num_classes=21, aux_logits=True)
    with pytest.raises(ValueError, match="aux_logits=false"):
        HashtagClassifier(with_aux, optimizer=None, image_pipeline={"crop": 256, "resize": 256})
    HashtagClassifier(with_aux, optimizer=None, image_pipeline={"crop": 299, "resize": 299})


def test_augmentation_strength_k_is_a_float_never_rounded():
    """The seed scales every transform by k and applies each with p = 0.4 + 0.1k; its author's code takes
    k as a float. k = 1.5 gives p = 0.55 in training and in TTA (not the 0.5 or 0.6 of k = 1 or 2)."""
    from torchvision.transforms import v2

    from experiments.common import build
    from lit_modules.hashtag import NormalizedAugment

    cfg = compose_train("experiment=hashtag", "augmentation.k=1.5")
    transforms = build(cfg.augmentation)
    assert transforms.k == 1.5 and transforms.describe()["k"] == 1.5
    train_p = [t.p for t in transforms.train().transforms if isinstance(t, v2.RandomApply)]
    assert len(train_p) == 6 and train_p == pytest.approx([0.55] * 6)
    tta = NormalizedAugment(transforms.k, 64, transforms.mean, transforms.std)
    assert [t.p for t in tta.pipeline.transforms if isinstance(t, v2.RandomApply)] == train_p
