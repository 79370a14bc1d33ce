"""DDP-aware samplers: per-epoch fresh subsets, every eval sample exactly once across ranks."""

import pytest

from datamodules.samplers import EpochFractionSampler, EvalSampler


def test_epoch_fraction_draws_a_fresh_subset_each_epoch():
    sampler = EpochFractionSampler(1000, fraction=0.2, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert len(first) == len(sampler) == 200 and len(set(first)) == 200
    sampler.set_epoch(1)
    second = list(sampler)
    assert set(first) != set(second)
    sampler.set_epoch(0)
    assert list(sampler) == first  # deterministic per (seed, epoch): resumes draw the same subsets


def test_epoch_fraction_ranks_are_disjoint_and_equal_sized():
    shards = []
    for rank in range(3):
        s = EpochFractionSampler(100, fraction=0.5, seed=0, num_replicas=3, rank=rank)
        s.set_epoch(4)
        shards.append(list(s))
    assert len({len(s) for s in shards}) == 1
    flat = [i for s in shards for i in s]
    assert len(flat) == len(set(flat)) == 48
    single = EpochFractionSampler(100, fraction=0.5, seed=0)
    single.set_epoch(4)
    assert set(flat) <= set(range(100))


def test_epoch_fraction_full_epoch_is_a_permutation():
    s = EpochFractionSampler(37, fraction=1.0, seed=1)
    assert sorted(s) == list(range(37))


@pytest.mark.parametrize("size,world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_eval_sampler_covers_every_sample_once(size, world):
    seen = []
    for rank in range(world):
        s = EvalSampler(size, num_replicas=world, rank=rank)
        items = list(s)
        assert len(items) == len(s)
        seen += items
    assert sorted(seen) == list(range(size))


def test_invalid_fraction():
    with pytest.raises(ValueError):
        EpochFractionSampler(10, fraction=0.0)


def test_fraction_above_one_is_several_fresh_passes():
    s = EpochFractionSampler(10, fraction=2.5, seed=4)
    order = list(s)
    assert len(order) == len(s) == 25
    assert sorted(order[:10]) == sorted(order[10:20]) == list(range(10)) and order[:10] != order[10:20]
    assert len(set(order[20:])) == 5
