"""Single-label classification scores and selective prediction (abstaining) for the hashtag model.

* :func:`confusion_scores`: accuracy and balanced accuracy (mean per-class recall over the classes
  present in the targets, the seed's "weighted accuracy", eq. 13) from a confusion matrix.
* Selective prediction: a model *suggests* its top class when that class is not ``other`` and its
  confidence reaches a threshold ``t``; otherwise it abstains. Over a set of ``n`` items,
  coverage(t) = #suggestions / n and precision(t) = #correct suggestions / #suggestions.
  :func:`risk_coverage` gives the whole curve (risk = 1 - precision), :func:`threshold_for_precision`
  the lowest threshold (largest coverage) whose precision meets a target on the data it is chosen on.
* :class:`SelectivePredictions`: a torchmetrics ``Metric`` collecting ``(confidence, prediction,
  target)`` (``cat`` states, DDP-gathered at ``compute``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def confusion_scores(confusion: Tensor) -> dict[str, Tensor]:
    """``acc`` and ``balanced_acc`` of a confusion matrix ``[C, C]`` (rows: true, columns: predicted)."""
    confusion = confusion.double()
    total = confusion.sum()
    support = confusion.sum(dim=1)
    recall = torch.where(support > 0, confusion.diagonal() / support.clamp(min=1), torch.zeros_like(support))
    present = support > 0
    acc = confusion.diagonal().sum() / total if total > 0 else total.new_tensor(0.0)
    balanced = recall[present].mean() if present.any() else total.new_tensor(0.0)
    return {"acc": acc.float(), "balanced_acc": balanced.float()}


def row_normalize(confusion: Tensor) -> Tensor:
    """Each row divided by its sum (rows without samples stay zero)."""
    confusion = confusion.double()
    return confusion / confusion.sum(dim=1, keepdim=True).clamp(min=1)


def risk_coverage(confidence: Tensor, correct: Tensor, eligible: Tensor | None = None) -> dict[str, Tensor]:
    """The risk-coverage curve over distinct thresholds, most confident first.

    Args:
        confidence: ``[n]`` confidence of each item's prediction.
        correct: ``[n]`` bool, the prediction is right.
        eligible: ``[n]`` bool, the item may be suggested at all (not ``other``); default all.

    Returns ``threshold``, ``coverage``, ``precision``, ``risk`` (each ``[m]``): suggesting the
    eligible items with ``confidence >= threshold[i]`` covers ``coverage[i]`` of all ``n`` items
    with precision ``precision[i]``.
    """
    n = confidence.numel()
    eligible = torch.ones_like(correct, dtype=torch.bool) if eligible is None else eligible.bool()
    conf = confidence[eligible].double()
    corr = correct[eligible].double()
    if conf.numel() == 0 or n == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=confidence.device)
        return {"threshold": empty, "coverage": empty, "precision": empty, "risk": empty}
    order = torch.argsort(conf, descending=True, stable=True)
    conf, corr = conf[order], corr[order]
    hits = torch.cumsum(corr, 0)
    count = torch.arange(1, conf.numel() + 1, dtype=torch.float64, device=conf.device)
    # a threshold can only cut between distinct confidences: keep the last item of every tie group
    last = torch.ones_like(conf, dtype=torch.bool)
    last[:-1] = conf[1:] < conf[:-1]
    precision = (hits / count)[last]
    return {
        "threshold": conf[last],
        "coverage": count[last] / n,
        "precision": precision,
        "risk": 1 - precision,
    }


def threshold_for_precision(
    confidence: Tensor, correct: Tensor, target: float, eligible: Tensor | None = None
) -> dict[str, float]:
    """The lowest threshold whose suggestions reach ``precision >= target`` (the largest coverage).

    When no threshold reaches the target the model abstains always: ``threshold = inf``,
    ``coverage = 0``, ``precision = 1`` (no wrong suggestion).
    """
    curve = risk_coverage(confidence, correct, eligible)
    ok = curve["precision"] >= target - 1e-12
    if not ok.any():
        return {"threshold": float("inf"), "coverage": 0.0, "precision": 1.0}
    i = int(torch.nonzero(ok).flatten()[-1])
    return {
        "threshold": float(curve["threshold"][i]),
        "coverage": float(curve["coverage"][i]),
        "precision": float(curve["precision"][i]),
    }


def selective_scores(
    confidence: Tensor, correct: Tensor, threshold: float, eligible: Tensor | None = None
) -> dict[str, float]:
    """Precision and coverage of the suggestions at a given threshold."""
    eligible = torch.ones_like(correct, dtype=torch.bool) if eligible is None else eligible.bool()
    chosen = eligible & (confidence >= threshold)
    n, k = confidence.numel(), int(chosen.sum())
    return {
        "coverage": k / n if n else 0.0,
        "precision": float(correct[chosen].double().mean()) if k else 1.0,
    }


class SelectivePredictions(Metric):
    """Collects ``confidence``, ``prediction`` and ``target`` of every item (DDP: gathered by ``cat``).

    ``compute()`` returns the three tensors; the scores are computed from them with the functions
    of this module (they need every item at once: thresholds are quantiles).
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("confidence", default=[], dist_reduce_fx="cat")
        self.add_state("prediction", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, probs: Tensor, target: Tensor) -> None:
        conf, pred = probs.max(dim=1)
        self.confidence.append(conf.detach().float())
        self.prediction.append(pred.detach().long())
        self.target.append(target.detach().long())

    def compute(self) -> dict[str, Tensor]:
        def cat(x):
            if isinstance(x, Tensor):
                return x
            return torch.cat(x) if x else torch.zeros(0, device=self.device)

        return {
            "confidence": cat(self.confidence),
            "prediction": cat(self.prediction).long(),
            "target": cat(self.target).long(),
        }


def area_under_risk_coverage(curve: dict[str, Tensor]) -> float:
    """Area under the risk-coverage curve (step-wise, from coverage 0; lower is better)."""
    if curve["coverage"].numel() == 0:
        return 0.0
    cov = torch.cat([curve["coverage"].new_zeros(1), curve["coverage"]])
    return float(((cov[1:] - cov[:-1]) * curve["risk"]).sum())
