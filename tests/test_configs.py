"""Config composition: every experiment composes, stages merge in the documented order."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.common  # noqa: F401  (PROJECT_ROOT)
from experiments.stages import stage_configs

CONF = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train.yaml", overrides=list(overrides))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.experiment_name and cfg.model._target_ and cfg.data._target_


@pytest.mark.parametrize(
    "group",
    [
        "optimizer=adam",
        "optimizer=sgd",
        "scheduler=none",
        "scheduler=cosine",
        "scheduler=cosine_restarts",
        "logger=many_loggers",
        "trainer=ddp_cpu",
        "trainer=gpu",
        "trainer=ddp",
        "debug=overfit",
        "augmentation=flip",
    ],
)
def test_groups_compose_with_the_tagger(group):
    compose_train("experiment=tagger", group)


def test_stage_overrides_then_all_stages():
    cfg = compose_train("experiment=tagger")
    stages = dict(stage_configs(cfg))
    assert list(stages) == ["image_cnn", "tag_mlp", "fusion", "label_count"]
    assert stages["fusion"].optimizer.lr == 1e-2 and stages["image_cnn"].optimizer.lr == 2e-3
    assert stages["label_count"].scheduler is None and stages["fusion"].scheduler.milestones == [8, 10]
    assert {s.model.stage for s in stages.values()} == set(stages)
    debug = dict(stage_configs(compose_train("experiment=tagger", "debug=limit")))
    assert all(s.trainer.max_epochs == 2 and s.trainer.limit_train_batches == 3 for s in debug.values())


def test_run_stages_selects_and_validates():
    cfg = compose_train("experiment=tagger", "run_stages=[fusion,label_count]")
    assert [name for name, _ in stage_configs(cfg)] == ["fusion", "label_count"]
    with pytest.raises(ValueError, match="unknown stages"):
        stage_configs(compose_train("experiment=tagger", "run_stages=[nope]"))


def test_table5_1_rows_are_prediction_rules_of_one_run():
    cfg = compose_train("experiment=tagger_table5_1")
    assert cfg.run_stages[-1] == "image_label_count"
    assert all(table.metrics[-1].endswith("/HF1") for table in cfg.report.tables)


@pytest.mark.parametrize("row", ["tagger_image_count", "tagger_composite"])
def test_table5_1_on_nuswide_uses_the_seed_settings_and_builds(row):
    from datamodules.base import DataInfo
    from experiments.stages import build_model, link_data

    cfg = compose_train(
        "experiment=tagger_nuswide_table5_1", f"ablation={row}", "model.net.image_cnn.weights=null"
    )
    assert cfg.model.net.image_cnn.name == "resnext101_32x8d" and cfg.data.epoch_fraction == 0.2
    assert cfg.optimizer.lr == 1e-3 and list(cfg.scheduler.milestones) == [5, 10]
    # what the real NUS-WIDE DataModule publishes after setup: 81 concepts, 1000 tags
    link_data(
        cfg, DataInfo(label_names=[f"c{i}" for i in range(81)], tag_names=[f"t{i}" for i in range(1000)])
    )
    net = build_model(cfg).net
    assert net.image_cnn is not None and net.num_labels == 81 and net.tag_mlp.layers[0].in_features == 1000


def test_group_specific_keys_do_not_break_a_group_swap():
    from experiments.stages import instantiate_partial

    cfg = compose_train("experiment=tagger", "scheduler=cosine", "optimizer=adam")
    stage = dict(stage_configs(cfg))["fusion"]  # the tagger's stages set multistep milestones
    assert "milestones" in stage.scheduler
    import torch

    opt = instantiate_partial(stage.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    sched = instantiate_partial(stage.scheduler)(optimizer=opt)
    assert type(sched).__name__ == "CosineAnnealingLR" and type(opt).__name__ == "Adam"


# Seed 002's Table 4: (optimizer, lr, annealing half-period T or None, k, side), row by row.
TABLE4 = {
    1: ("Adam", 1e-2, None, 1, 256),
    2: ("SGD", 1e-2, None, 1, 256),
    3: ("SGD", 0.1, None, 1, 256),
    4: ("SGD", 1e-2, None, 3, 256),
    5: ("SGD", 1e-2, None, 5, 256),
    6: ("SGD", 0.1, 3, 1, 256),
    7: ("Adam", 1e-3, None, 2, 256),
    8: ("SGD", 1e-2, None, 1, 512),
    9: ("SGD", 0.1, 3, 2, 512),
    10: ("SGD", 0.1, 50, 2, 512),
    11: ("SGD", 1e-2, None, 2, 512),
}


@pytest.mark.parametrize("row", sorted(TABLE4))
def test_hashtag_table4_rows_are_the_seeds(row):
    optimizer, lr, half_period, k, side = TABLE4[row]
    cfg = compose_train("experiment=hashtag_table4", f"ablation=hashtag_table4_row{row:02d}")
    assert cfg.optimizer._target_ == f"torch.optim.{optimizer}" and cfg.optimizer.lr == lr
    if optimizer == "SGD":  # the seed's plain SGD (eq. 7)
        assert cfg.optimizer.momentum == 0 and cfg.optimizer.weight_decay == 0
    if half_period is None:
        assert cfg.scheduler is None
    else:
        assert cfg.scheduler.T_max == half_period and cfg.scheduler.eta_min == 1e-3
    assert cfg.augmentation.k == k and cfg.augmentation.resize == cfg.augmentation.crop == side
    assert cfg.augmentation.keep_aspect is False
    assert cfg.trainer.max_epochs == (50 if side == 256 else 30)
    assert cfg.callbacks.early_stopping.patience == 15


def test_table4_sweep_runs_every_row_and_reports_training_time():
    import yaml

    sweep = yaml.safe_load(Path(CONF, "experiment", "hashtag_table4.yaml").read_text())
    assert sweep["hydra"]["sweeper"]["params"]["ablation"] == "glob(hashtag_table4_row*)"
    assert len(list(Path(CONF, "ablation").glob("hashtag_table4_row*.yaml"))) == len(TABLE4)
    assert "fit_minutes" in compose_train("experiment=hashtag_table4").report.metrics


def test_cosine_annealing_is_the_seeds_eq14():
    """lr_i = lr_min + (lr_max - lr_min) (1 + cos(pi i / T)) / 2 at every epoch i, past T too (no restart)."""
    import math

    import torch

    from experiments.stages import instantiate_partial

    cfg = compose_train("experiment=hashtag_table4", "ablation=hashtag_table4_row06")
    optimizer = instantiate_partial(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate_partial(cfg.scheduler)(optimizer=optimizer)
    for epoch in range(10):
        expected = 1e-3 + (0.1 - 1e-3) * (1 + math.cos(math.pi * epoch / 3)) / 2
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        optimizer.step()
        scheduler.step()
