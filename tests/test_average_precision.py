"""mAP over labels with positives, against scikit-learn."""

import pytest
import torch
from sklearn.metrics import average_precision_score

from lit_modules.metrics import MultilabelMeanAveragePrecision


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_matches_sklearn_on_labels_with_positives(seed):
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(40, 6, generator=g) < 0.3).long()
    target[:, 4] = 0  # a label without positives is left out, not scored 0
    scores = torch.rand(40, 6, generator=g)
    metric = MultilabelMeanAveragePrecision(6)
    for chunk in range(0, 40, 13):
        metric.update(scores[chunk : chunk + 13], target[chunk : chunk + 13])
    keep = target.sum(0) > 0
    expected = average_precision_score(target[:, keep].numpy(), scores[:, keep].numpy(), average="macro")
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


def test_map_without_any_positive_is_zero_not_nan():
    metric = MultilabelMeanAveragePrecision(3)
    metric.update(torch.rand(5, 3), torch.zeros(5, 3, dtype=torch.long))
    assert metric.compute().item() == 0.0


@pytest.mark.slow
def test_map_ddp_two_processes_equals_one(tmp_path):
    from functools import partial

    from tests.ddp import compute_on_ranks

    g = torch.Generator().manual_seed(5)
    target = (torch.rand(11, 4, generator=g) < 0.4).long()
    scores = torch.rand(11, 4, generator=g)
    shards = list(zip(scores.split([7, 4]), target.split([7, 4])))  # unequal shards
    single = MultilabelMeanAveragePrecision(4)
    single.update(scores, target)
    for value in compute_on_ranks(partial(MultilabelMeanAveragePrecision, 4), shards, tmp_path):
        assert value == pytest.approx(single.compute().item(), abs=1e-6)
