"""Per-task scores of a multi-class task scored as one-vs-rest outputs (seed 003's Tables 1-3).

From the confusion matrix ``M[y, y_hat]`` of the labelled samples (``C`` classes):

* ``F1_macro``: mean of the per-class F1 over the classes that occur in the targets or predictions
  (scikit-learn's ``f1_score(average="macro")`` default label set; ``0/0 = 0``);
* ``F1_weighted``: per-class F1 weighted by the class support (``average="weighted"``);
* ``HL``: Hamming loss of the one-hot prediction against the one-hot target over the ``C``
  one-vs-rest outputs, ``2 * (1 - accuracy) / C`` (a wrong sample has two wrong outputs); for two
  classes it is the error rate;
* ``accuracy``.

MAP (mean average precision over the classes) is :class:`lit_modules.metrics.MultilabelMeanAveragePrecision`
on the one-hot targets and the sigmoid scores.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

TASK_SCORE_NAMES = ("F1_macro", "F1_weighted", "HL", "accuracy")


def scores_from_confusion(confusion: Tensor) -> dict[str, Tensor]:
    """The scores of the module docstring from a ``[C, C]`` confusion matrix (rows: targets)."""
    confusion = confusion.double()
    c = confusion.shape[0]
    tp = confusion.diag()
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1e-12), torch.zeros_like(tp))
    present = denom > 0
    total = support.sum()
    if total == 0:
        zero = torch.tensor(0.0)
        return {"F1_macro": zero, "F1_weighted": zero, "HL": zero, "accuracy": zero}
    accuracy = tp.sum() / total
    return {
        "F1_macro": f1[present].mean().float(),
        "F1_weighted": ((f1 * support).sum() / total).float(),
        "HL": (2 * (1 - accuracy) / c).float(),
        "accuracy": accuracy.float(),
    }


class MulticlassTaskScores(Metric):
    """Confusion-matrix metric (``dist_reduce_fx="sum"``) giving :data:`TASK_SCORE_NAMES`.
    ``update(preds, target)`` takes class indices; targets ``< 0`` (no label) are skipped."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        # A scatter-add of 0/1 weights instead of indexing the labelled rows out: no data-dependent
        # shapes, so no host-device synchronisation per update.
        keep = target >= 0
        idx = target.clamp_min(0).long() * self.num_classes + preds.long()
        self.confusion.view(-1).scatter_add_(0, idx, keep.long())

    def compute(self) -> dict[str, Tensor]:
        return scores_from_confusion(self.confusion)
