"""Mean average precision over the labels that occur.

``mAP = (1/|J|) sum_{j in J} AP_j`` with ``J`` the labels that have at least one positive in the
evaluated set and ``AP_j`` the (non-interpolated) average precision of label ``j``. Labels without a
positive have no defined AP; torchmetrics scores them 0, which would make mAP depend on how many
absent labels a split happens to have, so they are left out here. Equal to scikit-learn's
``average_precision_score(y[:, J], p[:, J], average="macro")``.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities.data import dim_zero_cat


def mean_average_precision(scores: Tensor, target: Tensor) -> Tensor:
    """``mAP`` of ``scores [n, L]`` against 0/1 ``target [n, L]`` over the labels with a positive
    (``0`` when no label has one)."""
    has_positive = (target == 1).any(dim=0)
    if not has_positive.any():
        return torch.tensor(0.0, device=target.device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*No positive samples.*")
        per_label = multilabel_average_precision(
            scores, target, num_labels=target.shape[1], average=None, thresholds=None, validate_args=False
        )
    return per_label[has_positive].nan_to_num(0.0).mean()


class MultilabelMeanAveragePrecision(MultilabelAveragePrecision):
    """``MultilabelAveragePrecision(average=None)`` followed by a mean over labels with positives.

    States are the lists of scores and targets of the parent class (``dist_reduce_fx="cat"``), so
    DDP gathers every sample once.
    """

    def __init__(self, num_labels: int, **kwargs) -> None:
        super().__init__(num_labels=num_labels, average=None, thresholds=None, **kwargs)

    def compute(self) -> Tensor:  # type: ignore[override]
        if isinstance(self.target, list) and not self.target:  # nothing seen (after a DDP sync: a tensor)
            return torch.tensor(0.0)
        return mean_average_precision(dim_zero_cat(self.preds), dim_zero_cat(self.target))
