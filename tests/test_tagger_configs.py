"""The tagger's configs: the main job's stages, Table 5.1 as one run per seed, the ablation rows."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import experiments.common  # noqa: F401  (PROJECT_ROOT)
from experiments.stages import stage_configs
from lit_modules.tagger.module import RULES, STAGE_RULE

CONF = str(Path(__file__).resolve().parents[1] / "conf")
COMPOSITE = ["image_cnn", "tag_mlp", "fusion", "label_count"]


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train.yaml", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("experiment", ["tagger", "tagger_nuswide"])
def test_main_experiments_train_the_composite(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert [name for name, _ in stage_configs(cfg)] == COMPOSITE
    assert cfg.model.count_rounding == "half_even"
    assert "count_inputs" not in cfg.model.net


@pytest.mark.parametrize("experiment", ["tagger_table5_1", "tagger_nuswide_table5_1"])
def test_table5_1_is_one_run_per_seed_scoring_every_row(experiment):
    cfg = compose_train(f"experiment={experiment}")
    stages = dict(stage_configs(cfg))
    assert list(stages) == [*COMPOSITE, "image_label_count"]
    assert {name: s.model.stage for name, s in stages.items()} == {name: name for name in stages}
    last = stages["image_label_count"]
    assert last.optimizer.lr == 5e-4 and last.scheduler is None  # as the other count regressor (seed)
    assert cfg.hydra.mode.name == "MULTIRUN" and str(cfg.hydra.sweeper.params.seed) == "1,2,3"
    rules = [table.metrics[-1].split("/")[1] for table in cfg.report.tables]
    assert rules == ["composite", "fusion_topk", "image_count", "image_topk"]  # the seed's row order
    assert all(rule in RULES for rule in rules)
    for table in cfg.report.tables:
        rule = table.metrics[0].split("/")[1]
        assert [m.split("/")[-1] for m in table.metrics] == ["CP", "CR", "CF1", "OP", "OR", "OF1", "HF1"]
        assert all(m.split("/")[1] == rule for m in table.metrics)
    assert set(STAGE_RULE) == set(stages)


def test_table5_1_on_the_twin_seeds_the_split_and_trains_longer_than_the_main_job():
    table = dict(stage_configs(compose_train("experiment=tagger_table5_1", "seed=7")))
    main = dict(stage_configs(compose_train("experiment=tagger")))
    for name in COMPOSITE:
        assert table[name].trainer.max_epochs > main[name].trainer.max_epochs, name
    assert table["image_cnn"].data.split_seed == 7


def test_a_single_row_is_still_a_run_of_its_own():
    cfg = compose_train("experiment=tagger", "ablation=tagger_image_count")
    assert [name for name, _ in stage_configs(cfg)] == ["image_cnn", "image_label_count"]
    cfg = compose_train("experiment=tagger", "ablation=tagger_table5_1")
    assert [name for name, _ in stage_configs(cfg)] == [*COMPOSITE, "image_label_count"]
