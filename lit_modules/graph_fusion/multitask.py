"""Multi-task loss weighting: the seed's dynamic multi-task learning (DBN) and the MGDA baseline.

DBN (seed 003, eqs. 8-11) works at three levels:

* **sample level**: the focal loss ``-(1 - p_d)^beta log p_d`` per one-vs-rest output
  (:func:`lit_modules.losses.focal_loss`, beta = 2);
* **task level** (:meth:`DynamicTaskWeights.step_update`, every training step): the task weights
  ``w_f`` take one gradient step on

      L_D(t) = sum_f (M / m_f) | G_W^(f)(t) - mean_f G_W(t) * r_f(t)^alpha |_1          (eq. 11)

  where ``G_W^(f)`` is the gradient norm of the weighted task loss ``w_f L_f`` over the last-layer
  weights ``W`` (the task's own head by default, a shared last layer as an option),
  ``r_f = (L_f(t) / L_f(0)) / mean_f (L_f(t) / L_f(0))`` the inverse training rate and ``M / m_f`` the
  inverse share of positive training samples of task f. The target ``mean G_W * r_f^alpha`` is a
  constant (as in GradNorm), and ``G_W^(f) = w_f g_f`` with ``g_f`` the norm for ``w_f = 1``, so
  ``dL_D / dw_f = (M / m_f) sign(w_f g_f - target_f) g_f`` exactly. After the step the weights are
  clamped positive and renormalised to sum to the number of tasks T.
* **epoch level** (:meth:`DynamicTaskWeights.epoch_rebalance`): at the end of an epoch the mean loss of
  every task over the epoch gives the coefficient ``c_f = max_g Lbar_g / Lbar_f`` (the seed: "the
  largest of the mean losses divided by each task's mean loss"), which re-balances the weights for
  the next epoch (see the readings below).

**Task statistics independent of the number of classes.** A task of C one-vs-rest outputs has a loss
(and a head gradient) that grows with C when its outputs' terms are summed, so that DBN would read an
8-class task as "harder" than a 2-class one by construction. The module (``class_reduction: mean``,
the default) averages the C terms, so ``L_f``, ``L_f(0)``, ``r_f`` and the epoch means are per-output
means; ``G_W^(f)`` (``grad_norm: per_output``, the default) is the root mean square over the task's
C outputs of each output's gradient norm: ``||grad_W (w_f L_f)||_F * sqrt(C_f)`` for averaged
terms (``/ sqrt(C_f)`` for summed ones). The seed writes neither (it defines only the per-output loss,
eqs. 8-10); the old statistics (``class_reduction: sum``, ``grad_norm: full``) are options.

**The epoch level, three readings** (``epoch_rebalance``; the seed's text allows each, see
``docs/crisismmd.md``): ``multiply`` (default) multiplies the weights the task level reached by
``c_f`` ("a more aggressive update" on top of the step-level one, which is "not enough when task
difficulty is very uneven"); ``replace`` sets the weights to ``c_f`` (the weights "assigned at the start
of the training cycle", discarding what the task level learnt in the epoch; the old behaviour);
``factor`` keeps ``c_f`` as a separate per-epoch factor of the task losses, ``sum_f c_f w_f L_f``, with
the task level's ``w_f`` untouched and eq. 11 on ``w_f L_f``; ``none`` turns it off. The weights (and
factors) are renormalised to sum to T (the seed normalises nothing; a common scale only rescales
the learning rate).

**Choices where the seed is silent**: ``r_f``'s formula (GradNorm's, whose loss eq. 11 extends by
``M / m_f``), the weight update (sign-gradient steps of size ``lr``, clamp, sum T), ``L_f(0)`` = the
first step's losses. **Positives of a multi-class task** (``m_f``): the labelled training samples whose
class is not the task's negative class (``not_informative``, ``not_humanitarian``,
``little_or_no_damage`` on CrisisMMD); ``M`` is the number of training samples; the ``M / m_f``
factors are rescaled to mean one (a common factor only rescales ``lr``). Note that in eq. 11 ``M / m_f``
scales task f's step but not where its weight settles.

All state (weights, factors, ``L_f(0)``, the epoch's loss sums, ``M / m_f``) lives in persistent
buffers, so it is checkpointed and a resumed run continues with it.

MGDA (Sener & Koltun, NeurIPS 2018, "MGDA-UB"): the gradients of every task loss with respect to
the shared representation (the fused vector ``G``) are combined with the min-norm convex weights
found by Frank-Wolfe (:func:`min_norm_weights_from_gram`); the total loss is ``T * sum_f alpha_f L_f``.
The solver needs only the Gram matrix of the task gradients, which is summed over DDP ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: The epoch-level readings (see the module docstring).
EPOCH_REBALANCE = ("multiply", "replace", "factor", "none")


class DynamicTaskWeights(nn.Module):
    """Task weights of DBN with their step-level and epoch-level updates (see the module docstring).

    Args:
        num_tasks: T.
        alpha: exponent of the inverse training rate (seed: 1).
        lr: step size of the task-level update.
        min_weight: lower clamp before renormalising.
    """

    def __init__(
        self, num_tasks: int, alpha: float = 1.0, lr: float = 0.025, min_weight: float = 1e-3
    ) -> None:
        super().__init__()
        self.num_tasks, self.alpha, self.lr, self.min_weight = num_tasks, alpha, lr, min_weight
        self.register_buffer("weights", torch.ones(num_tasks))
        self.register_buffer("epoch_factors", torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.full((num_tasks,), float("nan")))
        self.register_buffer("inverse_positive_share", torch.ones(num_tasks))
        self.register_buffer("epoch_loss_sum", torch.zeros(num_tasks))
        self.register_buffer("epoch_loss_count", torch.zeros(num_tasks))

    def set_positive_counts(self, positives: Sequence[float], total: float) -> None:
        """``M / m_f`` from the training set's positive counts, rescaled to mean one."""
        m = torch.as_tensor(positives, dtype=torch.float).clamp_min(1.0)
        ratio = float(total) / m
        self.inverse_positive_share.copy_(ratio / ratio.mean())

    def current(self) -> Tensor:
        """The weights to use for this step's loss (a copy: updating them never touches the graph)."""
        return self.weights.clone()

    @torch.no_grad()
    def record(self, losses: Tensor, present: Tensor) -> None:
        """Accumulate this step's unweighted task losses (``present``: tasks with labels in the batch)."""
        losses = losses.detach().float()
        self.epoch_loss_sum += torch.where(present, losses, torch.zeros_like(losses))
        self.epoch_loss_count += present.float()
        first = torch.isnan(self.initial_losses) & present
        self.initial_losses.copy_(torch.where(first, losses, self.initial_losses))

    @torch.no_grad()
    def step_update(self, grad_norms: Tensor, losses: Tensor, present: Tensor) -> Tensor:
        """One gradient step of the weights on ``L_D`` (eq. 11); returns ``L_D`` before the step.

        Args:
            grad_norms: ``G_W^(f)`` per task, with the current weights.
            losses: ``L_f(t)`` (unweighted); present: tasks with labels in this batch (others keep
                their weight this step).
        """
        # Masked means instead of boolean indexing and an early return: the same arithmetic without
        # data-dependent shapes or branches, so a GPU step never waits for this update.
        present = present & ~torch.isnan(self.initial_losses) & (self.initial_losses > 0)
        mask = present.float()
        n = mask.sum()
        enough = n >= 2  # eq. 11 needs at least two tasks to balance; otherwise nothing changes
        w = self.weights
        g = grad_norms.detach().float()
        ratio = torch.where(present, losses.detach().float() / self.initial_losses, torch.ones_like(w))
        r = ratio / ((ratio * mask).sum() / n.clamp_min(1))
        target = (g * mask).sum() / n.clamp_min(1) * r.pow(self.alpha)
        diff = g - target
        c = self.inverse_positive_share
        l_d = (c * diff.abs() * mask).sum()
        unit_norm = g / w.clamp_min(1e-12)  # g_f: the norm with w_f = 1
        grad = torch.where(present, c * torch.sign(diff) * unit_norm, torch.zeros_like(w))
        new = (w - self.lr * grad).clamp_min(self.min_weight)
        self.weights.copy_(torch.where(enough, new * self.num_tasks / new.sum(), w))
        return torch.where(enough, l_d, torch.zeros_like(l_d))

    @torch.no_grad()
    def epoch_rebalance(self, mode: str = "multiply") -> Tensor:
        """End of epoch: ``c_f = max mean loss / mean_f`` over the epoch, applied as ``mode`` says
        (``multiply``, ``replace``, ``factor`` or ``none``; see the module docstring); the epoch's sums
        are cleared. Nothing changes when a task had no labelled sample in the epoch. Returns the
        weights times the factors (what multiplies each task loss next epoch)."""
        if mode not in EPOCH_REBALANCE:
            raise ValueError(f"epoch_rebalance must be one of {EPOCH_REBALANCE}, got {mode!r}")
        seen = self.epoch_loss_count > 0
        if mode != "none" and seen.all():
            means = (self.epoch_loss_sum / self.epoch_loss_count).clamp_min(1e-12)
            c = means.max() / means
            if mode == "replace":
                self.weights.copy_(c * self.num_tasks / c.sum())
            elif mode == "multiply":
                new = (self.weights * c).clamp_min(self.min_weight)
                self.weights.copy_(new * self.num_tasks / new.sum())
            else:
                self.epoch_factors.copy_(c * self.num_tasks / c.sum())
        self.epoch_loss_sum.zero_()
        self.epoch_loss_count.zero_()
        return self.weights * self.epoch_factors


def _min_norm_pair(v11: Tensor, v12: Tensor, v22: Tensor) -> tuple[Tensor, Tensor]:
    """Minimise ``||g x + h (1 - x)||^2`` over ``x in [0, 1]`` from ``g.g, g.h, h.h``: ``(x, cost)``."""
    denom = v11 + v22 - 2 * v12
    if denom <= 1e-12:
        return torch.tensor(0.5, dtype=v11.dtype), v22
    x = ((v22 - v12) / denom).clamp(0.0, 1.0)
    return x, x * x * v11 + 2 * x * (1 - x) * v12 + (1 - x) ** 2 * v22


def min_norm_weights(grads: Sequence[Tensor] | Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """Convex weights ``alpha`` (``alpha >= 0``, ``sum = 1``) minimising ``|| sum_f alpha_f g_f ||``
    (Sener & Koltun's Frank-Wolfe solver; two tasks have the closed form).

    Args:
        grads: T flattened gradients (or a ``[T, d]`` tensor).
    """
    g = (
        torch.stack([x.reshape(-1) for x in grads]).double()
        if not isinstance(grads, Tensor)
        else grads.double()
    )
    return min_norm_weights_from_gram(g @ g.T, max_iter, tol)


def min_norm_weights_from_gram(gram: Tensor, max_iter: int = 250, tol: float = 1e-6) -> Tensor:
    """:func:`min_norm_weights` from the Gram matrix ``[T, T]`` of the gradients (``g_f . g_g``)."""
    gram = gram.detach().double().cpu()
    t = gram.shape[0]
    if t == 1:
        return torch.ones(1)
    if t == 2:
        x, _ = _min_norm_pair(gram[0, 0], gram[0, 1], gram[1, 1])
        return torch.stack([x, 1 - x]).float()
    # start from the best pair
    best = None
    for i in range(t):
        for j in range(i + 1, t):
            x, cost = _min_norm_pair(gram[i, i], gram[i, j], gram[j, j])
            if best is None or cost < best[0]:
                best = (cost, i, j, x)
    _, i, j, x = best
    alpha = torch.zeros(t, dtype=torch.double)
    alpha[i], alpha[j] = x, 1 - x
    for _ in range(max_iter):
        k = int(torch.argmin(gram @ alpha))
        v11 = alpha @ gram @ alpha
        v12 = alpha @ gram[:, k]
        v22 = gram[k, k]
        gamma, _ = _min_norm_pair(v11, v12, v22)  # weight kept on the current point
        new = gamma * alpha
        new[k] += 1 - gamma
        if (new - alpha).abs().sum() < tol:
            alpha = new
            break
        alpha = new
    return alpha.float()
