"""The seed's caption filter and relevance coefficients (seed 000, section "scoring").

The rules as the relevance issue numbers them, for a caption of class ``y``:

1. ``P = (P_1 .. P_C)``, the classifier's class probabilities for the caption alone (no class
   sentence); ``p = P_y``;
2. drop it if ``p < mean_c P_c`` (its own class is less likely than an average class);
3. drop it if ``p < min_prob`` (0.5);
4. keep it with raw relevance ``r = p``;
5. ``r' = 1`` if ``r > saturate_above`` (0.9), else ``r' = r + shift`` (0.1); then map the kept
   ``r'`` by rank to a uniform spread on (0, 1]: ``coef_i = #{j : r'_j <= r'_i} / m`` (m kept
   captions; the largest maps to 1, ties share the larger rank).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rule_masks(probs: Tensor, labels: Tensor, *, min_prob: float = 0.5) -> dict[str, Tensor]:
    """Which rows each drop rule removes (rule 2 first, rule 3 on what rule 2 left), the kept rows
    and ``p``: ``{"below_mean", "below_min_prob", "keep"}`` bool ``[n]`` and ``"p"`` float ``[n]``."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs [n, C] and labels [n], got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    p = probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    below_mean = p < probs.mean(1)
    below_min_prob = ~below_mean & (p < min_prob)
    return {
        "p": p,
        "below_mean": below_mean,
        "below_min_prob": below_min_prob,
        "keep": ~below_mean & ~below_min_prob,
    }


def rank_normalise(values: Tensor) -> Tensor:
    """Rule 5: ``#{j : v_j <= v_i} / m`` (uniform on (0, 1], ties share the larger rank)."""
    if values.numel() == 0:
        return values.clone()
    ordered = torch.sort(values).values
    return torch.searchsorted(ordered, values, right=True).to(values.dtype) / values.numel()


def relevance_coefficients(
    probs: Tensor, labels: Tensor, *, min_prob: float = 0.5, saturate_above: float = 0.9, shift: float = 0.1
) -> tuple[Tensor, Tensor]:
    """``(keep [n] bool, coef [n] float)``: the rows the rules keep and their relevance coefficient in
    (0, 1] (0 for dropped rows). ``probs [n, C]`` are class probabilities, ``labels [n]`` the captions'
    own classes; the thresholds are the seed's defaults (configured in ``conf/model/relevance.yaml``)."""
    masks = rule_masks(probs, labels, min_prob=min_prob)
    keep, p = masks["keep"], masks["p"]
    raw = p[keep]
    shifted = torch.where(raw > saturate_above, torch.ones_like(raw), raw + shift)
    coef = torch.zeros_like(p)
    coef[keep] = rank_normalise(shifted)
    return keep, coef
