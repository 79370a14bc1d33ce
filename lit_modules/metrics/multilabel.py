"""Multi-label image annotation metrics (NUS-WIDE protocol).

Notation (``C`` classes, class index ``j``):

* ``NI_j^c`` -- images correctly labelled ``j`` (true positives),
* ``NI_j^p`` -- images predicted as ``j`` (predicted positives),
* ``NI_j^g`` -- images whose ground truth contains ``j`` (ground-truth positives).

Per-class (macro) scores, averaged over **all** ``C`` classes::

    C-P  = (1/C) * sum_j NI_j^c / NI_j^p
    C-R  = (1/C) * sum_j NI_j^c / NI_j^g
    C-F1 = 2 * C-P * C-R / (C-P + C-R)

Overall (micro) scores::

    O-P  = sum_j NI_j^c / sum_j NI_j^p
    O-R  = sum_j NI_j^c / sum_j NI_j^g
    O-F1 = 2 * O-P * O-R / (O-P + O-R)

and their harmonic mean::

    H-F1 = 2 * C-F1 * O-F1 / (C-F1 + O-F1)

Every ``0/0`` is taken as ``0`` (a class that is never predicted has precision 0,
a class without positives has recall 0), so no score is ever NaN. With this
convention C-P / C-R equal scikit-learn's ``precision_score`` / ``recall_score``
with ``average="macro", zero_division=0`` and O-P / O-R / O-F1 equal the
``average="micro"`` ones. Note that C-F1 is the harmonic mean of C-P and C-R, not
the mean of the per-class F1 scores.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

#: Keys of the dictionaries returned by the functions and the metric of this module.
SCORE_NAMES: tuple[str, ...] = ("CP", "CR", "CF1", "OP", "OR", "OF1", "HF1")


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """Element-wise ``num / den`` as floats, with ``x / 0`` defined as ``0``."""
    num, den = num.float(), den.float()
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / den.masked_fill(zero, 1.0))


def _harmonic_mean(a: Tensor, b: Tensor) -> Tensor:
    """``2ab / (a + b)``, and ``0`` when ``a + b = 0``."""
    return _safe_div(2 * a * b, a + b)


def _check_inputs(
    preds: Tensor, target: Tensor, num_labels: int | None = None, check_values: bool = True
) -> None:
    """Raise ``ValueError`` unless ``preds`` and ``target`` are ``[batch, num_labels]`` 0/1 tensors."""
    if preds.shape != target.shape:
        raise ValueError(
            f"`preds` and `target` must have the same shape, "
            f"got {tuple(preds.shape)} and {tuple(target.shape)}."
        )
    if preds.ndim != 2:
        raise ValueError(
            f"`preds` and `target` must have shape [batch, num_labels], got {tuple(preds.shape)}."
        )
    if num_labels is not None and preds.shape[1] != num_labels:
        raise ValueError(f"Expected {num_labels} labels (last dimension), got {preds.shape[1]}.")
    if check_values:
        for name, x in (("preds", preds), ("target", target)):
            if x.is_complex() or not ((x == 0) | (x == 1)).all():
                raise ValueError(f"`{name}` must contain only 0/1 values (binary label indicators).")


def annotation_counts(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class counts ``(NI^c, NI^p, NI^g)`` of binary ``[batch, C]`` predictions and targets.

    Returns three ``long`` vectors of length ``C``: true positives ``NI_j^c``,
    predicted positives ``NI_j^p`` and ground-truth positives ``NI_j^g``.
    Inputs are assumed valid (see :func:`multilabel_annotation_scores`).
    """
    preds, target = preds.bool(), target.bool()
    tp = (preds & target).sum(dim=0)
    return tp, preds.sum(dim=0), target.sum(dim=0)


def annotation_scores_from_counts(tp: Tensor, n_pred: Tensor, n_true: Tensor) -> dict[str, Tensor]:
    """Annotation scores from per-class counts.

    Args:
        tp: ``NI_j^c``, true positives per class, shape ``[C]``.
        n_pred: ``NI_j^p``, predicted positives per class, shape ``[C]``.
        n_true: ``NI_j^g``, ground-truth positives per class, shape ``[C]``.

    Returns:
        ``{"CP", "CR", "CF1", "OP", "OR", "OF1", "HF1"}`` as 0-d float tensors in ``[0, 1]``::

            CP  = mean_j NI_j^c / NI_j^p        CR  = mean_j NI_j^c / NI_j^g
            OP  = sum NI^c / sum NI^p           OR  = sum NI^c / sum NI^g
            CF1 = 2 CP CR / (CP + CR)           OF1 = 2 OP OR / (OP + OR)
            HF1 = 2 CF1 OF1 / (CF1 + OF1)

        where the means run over all ``C`` classes and every ``0/0`` is ``0``.
    """
    cp = _safe_div(tp, n_pred).mean()
    cr = _safe_div(tp, n_true).mean()
    tp_sum = tp.sum()
    op = _safe_div(tp_sum, n_pred.sum())
    or_ = _safe_div(tp_sum, n_true.sum())
    cf1 = _harmonic_mean(cp, cr)
    of1 = _harmonic_mean(op, or_)
    hf1 = _harmonic_mean(cf1, of1)
    return dict(zip(SCORE_NAMES, (cp, cr, cf1, op, or_, of1, hf1)))


def multilabel_annotation_scores(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """One-shot annotation scores of binary predictions.

    Args:
        preds: 0/1 predictions (int, bool or float) of shape ``[batch, C]``; the
            prediction rule (top-k, threshold, ...) must already be applied.
        target: 0/1 ground truth of the same shape.

    Returns:
        The dictionary of :func:`annotation_scores_from_counts`.

    Raises:
        ValueError: on a shape mismatch, a non-2-D input or values other than 0/1.
    """
    _check_inputs(preds, target)
    return annotation_scores_from_counts(*annotation_counts(preds, target))


class MultilabelAnnotationMetrics(Metric):
    """C-P, C-R, C-F1, O-P, O-R, O-F1 and H-F1 of multi-label annotations.

    The state is the three per-class count vectors ``NI^c`` (``tp``), ``NI^p``
    (``n_pred``) and ``NI^g`` (``n_true``), summed across processes in distributed
    runs; the overall counts are their sums. See the module docstring for the
    formulas.

    Args:
        num_labels: number of classes ``C``.
        validate_args: check that inputs contain only 0/1 values (this costs a
            device-host synchronisation per update). Shapes are always checked.
        **kwargs: forwarded to :class:`torchmetrics.Metric`.

    Example:
        >>> m = MultilabelAnnotationMetrics(3)
        >>> m.update(torch.tensor([[1, 0, 1]]), torch.tensor([[1, 1, 0]]))
        >>> m.compute()["OP"]
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    tp: Tensor
    n_pred: Tensor
    n_true: Tensor

    def __init__(self, num_labels: int, validate_args: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"`num_labels` must be a positive integer, got {num_labels!r}.")
        self.num_labels = num_labels
        self.validate_args = validate_args
        for name in ("tp", "n_pred", "n_true"):
            self.add_state(name, default=torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Accumulate counts of a batch of 0/1 ``preds`` and ``target`` of shape ``[batch, num_labels]``."""
        _check_inputs(preds, target, self.num_labels, check_values=self.validate_args)
        tp, n_pred, n_true = annotation_counts(preds, target)
        self.tp += tp
        self.n_pred += n_pred
        self.n_true += n_true

    def compute(self) -> dict[str, Tensor]:
        """Scores of all accumulated samples (see :func:`annotation_scores_from_counts`)."""
        return annotation_scores_from_counts(self.tp, self.n_pred, self.n_true)
