"""The seed's caption filter and relevance coefficients (seed 000, section "scoring").

The rules, numbered here 1-5 (the seed's steps 1-6, its steps 5 and 6 joined in rule 5), for a caption of
class ``y``:

1. ``P = (P_1 .. P_C)``, the classifier's class probabilities for the caption alone (no class
   sentence); ``p = P_y``;
2. drop it if ``p < mean_c P_c`` (its own class is less likely than an average class);
3. drop it if ``p < min_prob`` (0.5);
4. keep it with raw relevance ``r = p``;
5. ``r' = 1`` if ``r > saturate_above`` (0.9), else ``r' = r + shift`` (0.1); then normalise the
   kept ``r'`` onto (0, 1], by one of two readings (``normalize``):

   * ``rank`` (default): ``coef_i = #{j : r'_j <= r'_i} / m`` (m kept captions; the largest maps to
     1, ties share the larger rank): the only map that makes any set of values "uniformly
     distributed on (0; 1]", the seed's wording of step 6 and of its results. Every saturated
     caption ties at 1, so when most kept captions are saturated the rest are squeezed towards 0
     and the ``+ shift`` changes nothing but the tie at ``saturate_above``.
   * ``linear``: ``coef = (r' - min_prob) / (1 - min_prob)``, the affine map of the kept range
     ``[min_prob, 1]`` onto ``[0, 1]`` applied to ``r'``: the coefficient is a straight line in
     ``p`` (``min(p + shift, 1)``), the lowest kept caption gets ``shift / (1 - min_prob)`` (0.2)
     rather than 0, so the interval stays open at 0 and ``+ shift`` has a purpose. The seed's
     conclusions speak of changing "the distribution of the coefficients from linear to a more
     complex curve"; its formula is not given.
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


#: The two readings of rule 5's normalisation (see the module docstring).
NORMALIZATIONS = ("rank", "linear")


def rank_normalise(values: Tensor) -> Tensor:
    """Rule 5: ``#{j : v_j <= v_i} / m`` (uniform on (0, 1], ties share the larger rank)."""
    if values.numel() == 0:
        return values.clone()
    ordered = torch.sort(values).values
    return torch.searchsorted(ordered, values, right=True).to(values.dtype) / values.numel()


def linear_normalise(values: Tensor, min_prob: float = 0.5) -> Tensor:
    """Rule 5, ``linear``: ``(v - min_prob) / (1 - min_prob)`` (``[min_prob, 1]`` onto ``[0, 1]``)."""
    return ((values - min_prob) / (1.0 - min_prob)).clamp(max=1.0)


def relevance_coefficients(
    probs: Tensor,
    labels: Tensor,
    *,
    min_prob: float = 0.5,
    saturate_above: float = 0.9,
    shift: float = 0.1,
    normalize: str = "rank",
) -> tuple[Tensor, Tensor]:
    """``(keep [n] bool, coef [n] float)``: the rows the rules keep and their relevance coefficient in
    (0, 1] (0 for dropped rows). ``probs [n, C]`` are class probabilities, ``labels [n]`` the captions'
    own classes; the thresholds are the seed's defaults (configured in ``conf/model/relevance.yaml``);
    ``normalize``: ``rank`` or ``linear`` (rule 5, see the module docstring)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    masks = rule_masks(probs, labels, min_prob=min_prob)
    keep, p = masks["keep"], masks["p"]
    raw = p[keep]
    shifted = torch.where(raw > saturate_above, torch.ones_like(raw), raw + shift)
    coef = torch.zeros_like(p)
    coef[keep] = rank_normalise(shifted) if normalize == "rank" else linear_normalise(shifted, min_prob)
    return keep, coef
