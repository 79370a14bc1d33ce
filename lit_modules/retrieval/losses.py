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
    drift_weight: float = 0.0,
) -> Tensor:
    """The critic's loss. ``wgan_gp``: ``E[C(fake)] - E[C(real)] + lambda E[(||grad C(x_hat)||_2 - 1)^2]
    + epsilon E[C(real)^2]`` with ``x_hat`` on lines between real and fake rows (Gulrajani et al.
    2017) and the drift penalty ``epsilon`` of Karras et al. 2018 (the Wasserstein loss only sees
    differences of critic outputs, so without it their common level drifts freely); ``bce``: the GAN
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
    loss = loss + gp_weight * penalty
    if drift_weight:
        loss = loss + drift_weight * weighted_mean(real_out.pow(2), weight_real)
    return loss


def generator_loss(
    critic: nn.Module,
    fake: Tensor,
    weight: Tensor,
    kind: str = "wgan_gp",
    real: Tensor | None = None,
    weight_real: Tensor | None = None,
) -> Tensor:
    """The generator's side. WGAN: ``E[C(real)] - E[C(fake)]``, the critic's estimate of the
    Wasserstein distance, with ``real`` detached (its gradient is ``-E[C(fake)]``'s; the value does
    not depend on the critic's output level; without ``real``: ``-E[C(fake)]``). ``bce``: the
    non-saturating GAN loss, fake rows labelled real."""
    out = critic(fake).squeeze(1)
    if kind == "bce":
        return weighted_mean(
            F.binary_cross_entropy_with_logits(out, torch.ones_like(out), reduction="none"), weight
        )
    loss = -weighted_mean(out, weight)
    if real is not None:
        with torch.no_grad():
            level = critic(real.detach()).squeeze(1)
        loss = loss + weighted_mean(level, weight if weight_real is None else weight_real)
    return loss


MMD_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_to_prior(z: Tensor, weight: Tensor, prior: Tensor, scales: tuple[float, ...] = MMD_SCALES) -> Tensor:
    """Unbiased ``MMD^2`` between the selected rows of ``z`` and samples ``prior`` of ``N(0, I_d)``
    with the inverse multiquadratics kernel ``k(a, b) = C / (C + ||a - b||^2)``, ``C = 2 d s`` summed
    over the scales ``s`` (WAE-MMD, Tolstikhin et al. 2018, and its code):

    ``sum_{i != j} w_i w_j k(z_i, z_j) / sum_{i != j} w_i w_j + mean_{i != j} k(e_i, e_j)
    - 2 sum_{i, j} w_i k(z_i, e_j) / (n_e sum_i w_i)``
    """
    d = z.shape[1]
    off_z = (weight[:, None] * weight[None, :]) * (1.0 - torch.eye(len(z), device=z.device))
    off_p = 1.0 - torch.eye(len(prior), device=z.device)
    zz, pp, zp = torch.cdist(z, z).pow(2), torch.cdist(prior, prior).pow(2), torch.cdist(z, prior).pow(2)
    total = z.new_zeros(())
    for scale in scales:
        c = 2.0 * d * scale
        total = total + (c / (c + zz) * off_z).sum() / off_z.sum().clamp_min(1.0)
        total = total + (c / (c + pp) * off_p).sum() / off_p.sum().clamp_min(1.0)
        total = total - 2.0 * (c / (c + zp) * weight[:, None]).sum() / (
            len(prior) * weight.sum().clamp_min(1.0)
        )
    return total
