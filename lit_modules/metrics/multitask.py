"""Per-task scores of a multi-class task scored as one-vs-rest outputs (seed 003's Tables 1-3).

From the confusion matrix ``M[y, y_hat]`` of the labelled samples (``C`` classes):

* ``F1_macro``: mean of the per-class F1 over the classes that occur in the targets or predictions
  (scikit-learn's ``f1_score(average="macro")`` default label set; ``0/0 = 0``);
* ``F1_weighted``: per-class F1 weighted by the class support (``average="weighted"``);
* ``HL``: Hamming loss of the one-hot prediction against the one-hot target over the ``C``
  one-vs-rest outputs, ``2 * (1 - accuracy) / C`` (a wrong sample has two wrong outputs); for two
  classes it is the error rate;
* ``accuracy``.

MAP (mean average precision over the classes) is
:func:`lit_modules.metrics.average_precision.mean_average_precision` on the one-hot targets and the
sigmoid scores. :class:`MultiTaskScores` gathers all of it for several tasks in one metric object.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from lit_modules.metrics.average_precision import mean_average_precision

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


class MultiTaskScores(Metric):
    """Every per-task score of a multi-task classifier with missing labels, in one metric object.

    ``update(logits, labels, losses=None)``: ``logits`` maps task name -> ``[B, C_f]`` one-vs-rest
    logits, ``labels [B, T]`` class indices in task order (``-1`` = no label for that task),
    ``losses [T]`` the batch's mean loss per task over its labelled samples (optional).

    ``compute()`` returns ``<task>/{F1_macro, F1_weighted, HL, accuracy, MAP}`` (MAP on the labelled
    samples only), ``<task>/loss`` (the per-task loss averaged over all labelled samples, when
    losses were given) and the mean over tasks of each score, ``{F1_macro, ...}``.

    One update per step for all tasks, no value checks and no data-dependent indexing in
    ``update`` (unlabelled rows are dropped in ``compute``): cheap, and no host-device
    synchronisation. States: the confusion matrices (one flat tensor) and loss sums
    (``dist_reduce_fx="sum"``), logits and labels (``"cat"``), so DDP counts every sample once.
    """

    full_state_update = False

    def __init__(self, tasks: Mapping[str, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.tasks = dict(tasks)
        sizes = torch.tensor(list(self.tasks.values()))
        # All confusion matrices in one flat state, task f's at offsets[f] (one scatter-add per update).
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), (sizes**2).cumsum(0)[:-1]])
        self.register_buffer("num_classes", sizes, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self.add_state(
            "confusion", default=torch.zeros(int((sizes**2).sum()), dtype=torch.long), dist_reduce_fx="sum"
        )
        for task in self.tasks:
            self.add_state(f"logits_{task}", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("loss_sum", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")
        self.add_state("loss_count", default=torch.zeros(len(self.tasks)), dist_reduce_fx="sum")

    def update(self, logits: Mapping[str, Tensor], labels: Tensor, losses: Tensor | None = None) -> None:
        task_logits = [logits[task].detach() for task in self.tasks]
        preds = torch.stack([x.argmax(-1) for x in task_logits], dim=1)  # [B, T]
        keep = labels >= 0
        idx = self.offsets + labels.clamp_min(0).long() * self.num_classes + preds
        self.confusion.scatter_add_(0, idx.reshape(-1), keep.reshape(-1).long())
        for task, x in zip(self.tasks, task_logits):
            getattr(self, f"logits_{task}").append(x)  # the sigmoid waits for compute()
        self.labels.append(labels)
        if losses is not None:
            counts = keep.sum(0).to(self.loss_sum.dtype)
            self.loss_sum += losses.detach().float() * counts
            self.loss_count += counts

    def task_confusion(self, f: int) -> Tensor:
        """Task ``f``'s ``[C, C]`` confusion matrix (rows: targets)."""
        c = int(self.num_classes[f])
        start = int(self.offsets[f])
        return self.confusion[start : start + c * c].view(c, c)

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        labels = dim_zero_cat(self.labels) if len(self.labels) else None
        for f, (task, num_classes) in enumerate(self.tasks.items()):
            scores = scores_from_confusion(self.task_confusion(f))
            scores["MAP"] = torch.tensor(0.0)
            if labels is not None:
                keep = labels[:, f] >= 0
                if keep.any():
                    onehot = torch.nn.functional.one_hot(labels[keep, f].long(), num_classes)
                    probs = dim_zero_cat(getattr(self, f"logits_{task}"))[keep].float().sigmoid()
                    scores["MAP"] = mean_average_precision(probs, onehot)
            if self.loss_count[f] > 0:
                scores["loss"] = self.loss_sum[f] / self.loss_count[f]
            out.update({f"{task}/{name}": value.float().cpu() for name, value in scores.items()})
        for name in (*TASK_SCORE_NAMES, "MAP"):
            out[name] = torch.stack([out[f"{task}/{name}"] for task in self.tasks]).mean()
        return out
