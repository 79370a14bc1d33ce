"""Loss terms of the cycle-consistent embedder, each on plain tensors with per-row weights.

``weight`` rows (0/1) select the rows a term sees without boolean indexing (no host sync); means
are over the selected rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def weighted_mean(values: Tensor, weight: Tensor) -> Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1.0)


def reconstruction(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean squared error ``||pred - target||^2`` averaged over the elements of the selected rows."""
    return weighted_mean((pred - target).pow(2).flatten(1).mean(dim=1), weight)


def token_reconstruction(logits: Tensor, ids: Tensor, weight: Tensor) -> Tensor:
    """Cross-entropy of the text decoder on the real (non-pad) tokens of the selected rows."""
    per_token = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")  # [B, L]
    real = (ids > 0).float()
    return weighted_mean((per_token * real).sum(1) / real.sum(1).clamp_min(1.0), weight)


def triplet_ranking(
    a: Tensor, b: Tensor, weight: Tensor, margin: float = 0.2, hardest: bool = False
) -> Tensor:
    """Hinge triplet loss on cosine similarity ``s(a, b)`` for the pairs ``(a_k, b_k)`` of the selected rows:

    ``sum_k sum_{c != k} [m - s(a_k, b_k) + s(a_k, b_c)]_+ + [m - s(a_k, b_k) + s(a_c, b_k)]_+``

    (``hardest``: VSE++, the max over ``c`` instead of the sum), averaged over the selected ``k``;
    only selected rows serve as negatives.
    """
    scores = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    positive = scores.diagonal()
    valid = (weight[:, None] * weight[None, :]) * (1.0 - torch.eye(len(a), device=a.device))
    cost_b = (margin + scores - positive[:, None]).clamp_min(0) * valid  # anchor a_k, negative b_c
    cost_a = (margin + scores - positive[None, :]).clamp_min(0) * valid  # anchor b_k, negative a_c
    if hardest:
        per_row = cost_b.max(dim=1).values + cost_a.max(dim=0).values
    else:
        per_row = cost_b.sum(dim=1) + cost_a.sum(dim=0)
    return weighted_mean(per_row, weight)


def critic_loss(
    critic: nn.Module,
    real: Tensor,
    fake: Tensor,
    weight_real: Tensor,
    weight_fake: Tensor,
    kind: str = "wgan_gp",
    gp_weight: float = 10.0,
) -> Tensor:
    """The critic's loss. ``wgan_gp``: ``E[C(fake)] - E[C(real)] + lambda E[(||grad C(x_hat)||_2 - 1)^2]``
    with ``x_hat`` on lines between real and fake rows (Gulrajani et al. 2017); ``bce``: the GAN
    discriminator's binary cross-entropy (real = 1)."""
    real, fake = real.detach(), fake.detach()
    real_out, fake_out = critic(real).squeeze(1), critic(fake).squeeze(1)
    if kind == "bce":
        return weighted_mean(
            F.binary_cross_entropy_with_logits(real_out, torch.ones_like(real_out), reduction="none"),
            weight_real,
        ) + weighted_mean(
            F.binary_cross_entropy_with_logits(fake_out, torch.zeros_like(fake_out), reduction="none"),
            weight_fake,
        )
    loss = weighted_mean(fake_out, weight_fake) - weighted_mean(real_out, weight_real)
    n = min(len(real), len(fake))
    alpha = torch.rand(n, 1, device=real.device)
    mixed = (alpha * real[:n] + (1 - alpha) * fake[:n]).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    penalty = weighted_mean((grad.norm(dim=1) - 1).pow(2), weight_real[:n] * weight_fake[:n])
    return loss + gp_weight * penalty


def generator_loss(critic: nn.Module, fake: Tensor, weight: Tensor, kind: str = "wgan_gp") -> Tensor:
    """The generator's side: ``-E[C(fake)]`` (WGAN) or BCE with the fake rows labelled real."""
    out = critic(fake).squeeze(1)
    if kind == "bce":
        return weighted_mean(
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none"), weight
        )
    return -weighted_mean(out, weight)
