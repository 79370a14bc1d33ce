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


@pytest.mark.parametrize("group", ["optimizer=adam", "optimizer=sgd", "scheduler=none", "scheduler=cosine",
                                   "scheduler=cosine_restarts", "logger=many_loggers", "trainer=ddp_cpu",
                                   "trainer=gpu", "trainer=ddp", "debug=overfit", "augmentation=flip"])
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


def test_table5_1_sweep_rows():
    cfg = compose_train("experiment=tagger_table5_1", "ablation=tagger_image_count")
    assert cfg.run_stages == ["image_cnn", "label_count"] and cfg.model.net.count_inputs == "image"
    assert cfg.report.metrics[-1] == "test/HF1"


def test_group_specific_keys_do_not_break_a_group_swap():
    from experiments.stages import instantiate_partial

    cfg = compose_train("experiment=tagger", "scheduler=cosine", "optimizer=adam")
    stage = dict(stage_configs(cfg))["fusion"]  # the tagger's stages set multistep milestones
    assert "milestones" in stage.scheduler
    import torch

    opt = instantiate_partial(stage.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    sched = instantiate_partial(stage.scheduler)(optimizer=opt)
    assert type(sched).__name__ == "CosineAnnealingLR" and type(opt).__name__ == "Adam"
