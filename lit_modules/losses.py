"""Loss functions shared by the models of the suite.

:func:`focal_loss` is the sample-level loss of the dynamic multi-task module of seed 003
(eq. 10): for every one-vs-rest output with probability ``p = sigmoid(logit)`` and target ``y``,

    p_d = p if y = 1 else 1 - p,        L = -(1 - p_d)^beta * log(p_d)

(``beta = 0`` is plain binary cross-entropy). An optional ``alpha`` balances positives and negatives
as in Lin et al. (RetinaNet); the seed has none (``alpha=None``). :func:`one_vs_rest_loss` turns a
multi-class target (class index, ``-1`` = no label) into one-vs-rest targets and masks unlabelled
rows out, so a missing label never contributes (and is never imputed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def focal_loss(
    logits: Tensor, targets: Tensor, beta: float = 2.0, alpha: float | None = None, reduction: str = "mean"
) -> Tensor:
    """Sigmoid focal loss of ``logits`` against 0/1 ``targets`` (same shape).

    Numerically stable (``log p_d`` from ``binary_cross_entropy_with_logits``).
    ``reduction``: ``"none"`` (per element), ``"mean"`` or ``"sum"``.
    """
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log p_d
    loss = ce
    if beta:
        p = torch.sigmoid(logits)
        p_d = p * targets + (1 - p) * (1 - targets)
        loss = (1 - p_d).pow(beta) * ce
    if alpha is not None and alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def one_vs_rest_loss(
    logits: Tensor,
    target: Tensor,
    kind: str = "focal",
    beta: float = 2.0,
    alpha: float | None = None,
    class_reduction: str = "sum",
) -> tuple[Tensor, Tensor]:
    """Masked one-vs-rest loss of a multi-class task.

    ``L = sum_i m_i l_i / max(1, sum_i m_i)`` with ``m_i = [y_i >= 0]`` and ``l_i`` the sample's
    focal (or BCE) terms summed (or averaged) over the ``C`` outputs. Unlabelled rows are weighted
    by zero instead of indexed out, so the shapes never depend on the data and nothing waits for the
    device (no host-device synchronisation per step on a GPU).

    Args:
        logits: ``[n, C]`` one logit per class.
        target: ``[n]`` class indices; ``-1`` marks a sample without a label for this task.
        kind: ``"focal"`` (seed eq. 10) or ``"bce"`` (``beta = 0``).
        class_reduction: ``"sum"`` adds the C one-vs-rest terms of a sample, ``"mean"`` averages
            them. The sum makes a task's loss (and its head's gradient) grow with C, which statistics
            across tasks (seed 003's DBN) then read as difficulty; the mean keeps every task on the scale
            of one binary problem (the graph-fusion model's default). With plain SGD the mean also divides
            a C-class head's step by C; an adaptive optimiser such as Adam rescales each parameter's step
            and is insensitive to it.

    Returns:
        ``(loss, count)``: the loss averaged over the labelled samples, and their number (a 0-d
        integer tensor on the logits' device). Without any labelled sample the loss is a zero that
        still depends on ``logits`` (so DDP and autograd see every parameter used).
    """
    if kind == "bce":
        beta = 0.0
    elif kind != "focal":
        raise ValueError(f"unknown sample loss {kind!r}; use 'focal' or 'bce'")
    if class_reduction not in ("sum", "mean"):
        raise ValueError(f"unknown class_reduction {class_reduction!r}; use 'sum' or 'mean'")
    labelled = target >= 0
    count = labelled.sum()
    onehot = F.one_hot(target.clamp_min(0).long(), logits.shape[1]).to(logits.dtype)
    per_element = focal_loss(logits, onehot, beta=beta, alpha=alpha, reduction="none")
    per_sample = per_element.sum(1) if class_reduction == "sum" else per_element.mean(1)
    loss = (per_sample * labelled.to(per_sample.dtype)).sum() / count.clamp_min(1).to(per_sample.dtype)
    return loss, count


def weighted_classification_loss(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, kind: str = "bce"
) -> Tensor:
    """Single-label classification loss with optional per-sample weights (relevance coefficients).

    ``kind="bce"``: sigmoid outputs against one-hot targets, ``l_i = sum_c BCE(z_ic, y_ic)`` (summed
    over classes, as :func:`one_vs_rest_loss`); ``kind="ce"``: softmax cross-entropy ``l_i = -log
    softmax(z_i)_{y_i}``. Reduced as ``(1/n) sum_i w_i l_i`` (``w_i = 1`` without weights): a
    coefficient scales a sample's gradient, and a batch of low-relevance captions moves the model less
    (normalising by ``sum_i w_i`` would undo that per batch).
    """
    if kind == "bce":
        onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
        per_sample = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1)
    elif kind == "ce":
        per_sample = F.cross_entropy(logits, target, reduction="none")
    else:
        raise ValueError(f"unknown classification loss {kind!r}; use 'bce' or 'ce'")
    if weight is not None:
        per_sample = per_sample * weight.to(per_sample.dtype)
    return per_sample.mean()
