"""Prediction rules: turn a vector of label probabilities into a 0/1 labelling (the paper's
"indicator function").

* threshold alpha:  ``m_j = 1  if  p_j > alpha``;
* top-k (fixed k):  ``m_j = 1`` for the k largest ``p_j`` (the components use k = 3);
* top-k per sample: as top-k, with a different ``k_i`` for every image ``i``; the composite model
  takes ``k_i = max(1, round(count_i))`` from the label-count regressor (:func:`counts_to_k`).

Ties are broken by ``torch.topk`` (lowest index first among equals), so every row gets exactly
``k_i`` labels when ``k_i <= num_labels``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def threshold_labels(probs: Tensor, alpha: float = 0.5) -> Tensor:
    """``[n, C]`` probabilities -> ``[n, C]`` long 0/1 with ``p > alpha``."""
    return (probs > alpha).long()


def top_k_labels(probs: Tensor, k: int | Tensor) -> Tensor:
    """Mark the ``k`` most probable labels of each row.

    Args:
        probs: ``[n, C]`` scores (probabilities or logits: only the order matters).
        k: an int for all rows, or a ``[n]`` integer tensor with one ``k_i`` per row
            (values are clamped to ``[0, C]``).
    """
    n, num_labels = probs.shape
    if isinstance(k, int):
        k_row = torch.full((n,), k, dtype=torch.long, device=probs.device)
    else:
        k_row = k.to(device=probs.device, dtype=torch.long).reshape(n)
    k_row = k_row.clamp(0, num_labels)
    if n == 0:
        return torch.zeros_like(probs, dtype=torch.long)
    # Rank every label inside its row (0 = most probable), keep those ranked below k_i.
    order = probs.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(num_labels, device=probs.device).expand(n, -1))
    return (rank < k_row[:, None]).long()


#: How :func:`counts_to_k` turns a predicted count into an integer. The seed takes "the top k labels
#: of LP, where k is the prediction of LQP" without saying how a real-valued prediction is rounded.
#: ``half_even`` (``torch.round``, Python's ``round``: 2.5 -> 2, 3.5 -> 4) is what PyTorch code gets
#: by default; ``half_up`` rounds halves up (2.5 -> 3); ``floor`` and ``ceil`` shift every k. For a
#: regression output exact halves are rare, so ``half_even`` and ``half_up`` almost always agree.
ROUNDINGS = {
    "half_even": torch.round,
    "half_up": lambda x: torch.floor(x + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def counts_to_k(
    count: Tensor, min_k: int = 1, max_k: int | None = None, rounding: str = "half_even"
) -> Tensor:
    """Predicted label counts ``[n]`` (real numbers) -> integer ``k_i = clamp(round(count_i), min_k, max_k)``,
    ``round`` being one of :data:`ROUNDINGS`."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {sorted(ROUNDINGS)}, got {rounding!r}")
    k = ROUNDINGS[rounding](count.float()).long().clamp(min=min_k)
    return k if max_k is None else k.clamp(max=max_k)
