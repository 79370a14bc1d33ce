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
