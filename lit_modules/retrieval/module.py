"""LightningModule of the cycle-consistent image-text embedder (seed 004), trained in stages.

With ``f_I, f_T`` the autoencoder embeddings, ``z_I = E_I(f_I)``, ``z_T = E_T(f_T)``, ``s`` the
cosine similarity and ``eps ~ N(0, I)`` samples of the prior, the training objective of a stage is
``sum_t lambda_t L_t`` over the terms

=========================  =======================================================================  ========
term                       formula                                                                  rows
=========================  =======================================================================  ========
``auto``                   ``||Img_dec(f_I) - x||^2 + CE(Txt_dec(f_T), w)``                         all
``embedding_auto``         ``||D_I(z_I) - f_I||^2 + ||D_T(z_T) - f_T||^2``                          all
``cycle``                  ``||D_I(E_T(D_T(z_I))) - f_I||^2 + ||D_T(E_I(D_I(z_T))) - f_T||^2``      all
``paired_reconstruction``  ``||D_T(z_I) - f_T||^2 + ||D_I(z_T) - f_I||^2``                          pairs
``latent_adversarial``     critics ``C^Z_I, C^Z_T`` cannot tell ``z_I`` from ``z_T``                 all
``domain_adversarial``     critics ``C_I, C_T`` cannot tell ``f_I`` from ``D_I(z_T)``, ``f_T``
                           from ``D_T(z_I)``                                                        all
``prior_matching``         ``z_I`` and ``z_T`` look like samples of ``N(0, I)``: a critic ``C_P``
                           (``adversarial``) or ``MMD^2`` (``mmd``, WAE-MMD)                        all
``paired_retrieval``       triplet ``[m - s(z_I, z_T) + s(z_I, z_T')]_+ + ...`` (margin 0.2)        pairs
``unpaired_retrieval``     the same on cycle-made pseudo-pairs ``(z_I, E_T(D_T(z_I)))``,
                           ``(E_I(D_I(z_T)), z_T)``                                                 unpaired
=========================  =======================================================================  ========

"all" rows are pairs plus the unpaired images and captions of the batch; ``use_unpaired: false``
restricts every term to the pairs (the "unpaired terms off" control and the VSE++ baseline).
Adversarial terms: for the WGAN critics (``wgan_gp``) the generator's term is the critic's estimate
of the Wasserstein distance, ``E[C(real)] - E[C(fake)]`` with the real side fixed, so its value does
not drift with the critics' output level; the critics get the gradient penalty (``gp_weight``) and
the drift penalty ``epsilon E[C(real)^2]`` of Karras et al. 2018 (``drift_weight``), which keeps
that level near 0. ``bce``: the GAN discriminators' cross-entropy and the non-saturating generator
loss.

``loss_weights`` switches terms on (0 or missing: off) and ``trainable`` names the parts that update;
the rest are frozen (no gradients, eval mode), and so is a trainable part that no active term uses
(it would get no gradient: under DDP a parameter without one stalls the gradient reduction). The
experiments chain stages (autoencoders -> latent maps -> joint) that set both, the hardest-negative
switch and each stage's checkpoint monitor through ordinary ``stages:`` overrides; the autoencoder
stage is picked by ``val/auto`` (min), since its latent maps are still random there.

Adversarial terms use manual optimisation: every ``critic_every`` batches ``n_critic`` critic steps
(critic optimiser over the five critics), then one generator step (generator optimiser over the other
eight parts); both optimisers' states are checkpointed. Under DDP each backward runs without the
DDP reducer and this module averages the gradients of the stepping optimiser over the ranks itself
(one ``all_reduce`` of the flattened gradients): the two backward passes of a step touch different
parameters, which the reducer (built for one backward per forward) cannot follow.

Logged besides the terms (``train/<term>``, epoch means over the rows each term sees): the critics'
loss, ``train/latent_spread`` (``1 - ||mean of the unit latents||^2``: 0 when every embedding is the
same) and, with hardest negatives, ``train/retrieval_collapsed``: 1 for an epoch whose mean
hardest-negative loss sits at ``2m`` with the paired latents' spread near 0 (every embedding the
same, so every similarity is equal and no positive scores above its hardest negative), with a
warning. A loss at ``2m`` with a normal spread (e.g. right after initialisation) is not collapse.
Validation and test log ``<split>/auto``, ``<split>/embedding_auto``, ``<split>/paired_reconstruction``
and ``<split>/cycle`` on the evaluation images and all five captions of each, next to the retrieval
metrics.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torchmetrics import MeanMetric

from lit_modules.base import SuiteModule, per_split
from lit_modules.metrics import CocoRetrievalMetrics
from lit_modules.retrieval import losses
from lit_modules.retrieval.networks import CRITIC_PARTS, EMBEDDING_PARTS, PARTS, CycleRetrievalNet

log = logging.getLogger(__name__)

TERMS = (
    "auto",
    "embedding_auto",
    "cycle",
    "paired_reconstruction",
    "latent_adversarial",
    "domain_adversarial",
    "prior_matching",
    "paired_retrieval",
    "unpaired_retrieval",
)
ADVERSARIAL = ("latent_adversarial", "domain_adversarial", "prior_matching")
_ENCODERS = ("image_encoder", "text_encoder")
_TO_LATENT = ("image_to_latent", "text_to_latent")
#: The parts each term's value depends on (with trainable parameters).
TERM_PARTS: dict[str, tuple[str, ...]] = {
    "auto": (*_ENCODERS, "image_decoder", "text_decoder"),
    "embedding_auto": _ENCODERS + EMBEDDING_PARTS,
    "cycle": _ENCODERS + EMBEDDING_PARTS,
    "paired_reconstruction": _ENCODERS + EMBEDDING_PARTS,
    "latent_adversarial": (*_ENCODERS, *_TO_LATENT, "image_latent_critic", "text_latent_critic"),
    "domain_adversarial": (*_ENCODERS, *EMBEDDING_PARTS, "image_domain_critic", "text_domain_critic"),
    "prior_matching": (*_ENCODERS, *_TO_LATENT, "prior_critic"),
    "paired_retrieval": _ENCODERS + _TO_LATENT,
    "unpaired_retrieval": _ENCODERS + EMBEDDING_PARTS,
}
#: The rows each term is averaged over (see the module doc), for the logged epoch means.
TERM_ROWS = {
    "paired_reconstruction": "paired",
    "paired_retrieval": "paired",
    "unpaired_retrieval": "unpaired",
}
EVALUATION_TERMS = ("auto", "embedding_auto", "paired_reconstruction", "cycle")
#: An epoch whose mean hardest-negative loss is within this share of ``2m`` while the paired latents'
#: spread is below ``COLLAPSED_SPREAD`` counts as collapsed.
COLLAPSE_TOLERANCE = 0.02
COLLAPSED_SPREAD = 0.05


class CycleRetrieval(SuiteModule):
    """Args:
    net: the parts (:class:`~lit_modules.retrieval.networks.CycleRetrievalNet`).
    optimizer: ``functools.partial`` of the generator optimiser (``conf/optimizer``).
    critic_optimizer: ``functools.partial`` of the critic optimiser (``None``: the generator's).
        Each optimiser gets its own scheduler from ``scheduler``.
    trainable: the parts this stage updates (``None``: all).
    loss_weights: ``{term: lambda}``; missing terms are off.
    use_unpaired: whether unpaired rows reach the loss terms.
    margin, hardest_negative: the triplet loss (0.2; VSE++: hardest negative).
    hardest_negative_after: with ``hardest_negative``, the epochs of the stage that first use the sum
        over negatives (a warm-up: from embeddings that do not yet retrieve, the hardest negative
        collapses every embedding onto one point, the loss stuck at ``2m``; Faghri et al. 2018).
    adversarial: ``wgan_gp`` or ``bce``; ``gp_weight``, ``drift_weight``, ``n_critic``,
        ``critic_every``: its settings (``n_critic`` critic steps every ``critic_every`` batches).
    prior_divergence: ``adversarial`` (the prior critic, of kind ``adversarial``) or ``mmd``.
    """

    def __init__(
        self,
        net: CycleRetrievalNet,
        optimizer: Any,
        scheduler: Any = None,
        critic_optimizer: Any = None,
        trainable: list[str] | None = None,
        loss_weights: dict[str, float] | None = None,
        use_unpaired: bool = True,
        margin: float = 0.2,
        hardest_negative: bool = False,
        hardest_negative_after: int = 0,
        adversarial: str = "wgan_gp",
        gp_weight: float = 10.0,
        drift_weight: float = 1.0e-3,
        n_critic: int = 1,
        critic_every: int = 1,
        prior_divergence: str = "adversarial",
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(
            {"main": optimizer, "critic": critic_optimizer or optimizer}, scheduler, scheduler_interval
        )
        weights = dict(loss_weights or {})
        trainable = list(trainable) if trainable is not None else list(PARTS)
        unknown, unknown_parts = set(weights) - set(TERMS), set(trainable) - set(PARTS)
        if unknown or unknown_parts:
            raise ValueError(f"unknown loss terms {sorted(unknown)} or parts {sorted(unknown_parts)}")
        if adversarial not in ("wgan_gp", "bce") or prior_divergence not in ("adversarial", "mmd"):
            raise ValueError(f"unknown adversarial {adversarial!r} or prior_divergence {prior_divergence!r}")
        if critic_every < 1:
            raise ValueError(f"critic_every must be at least 1, got {critic_every}")
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler", "critic_optimizer"])
        self.automatic_optimization = False
        self.net = net
        self.weights = {t: float(weights.get(t, 0.0)) for t in TERMS}
        self.active = [t for t in TERMS if self.weights[t] > 0]
        critic_terms = [t for t in self.active if t in ADVERSARIAL]
        if prior_divergence == "mmd" and "prior_matching" in critic_terms:
            critic_terms.remove("prior_matching")
        self.critic_terms_on = critic_terms
        self.adversarial_on = bool(critic_terms)
        used = {part for t in self.active for part in self._term_parts(t)}
        self.trainable = [p for p in trainable if p in used]
        idle = [p for p in trainable if p not in used]
        if idle and self.active:
            log.info("parts no active loss term uses stay frozen: %s", ", ".join(idle))
        for part in PARTS:
            getattr(net, part).requires_grad_(part in self.trainable)
        self.retrieval = per_split(CocoRetrievalMetrics)
        self.reconstruction = per_split(MeanMetric, EVALUATION_TERMS)
        # paired rows x (hardest-negative loss, latent spread), paired rows: this epoch's sums
        self.register_buffer("_retrieval_epoch", torch.zeros(3), persistent=False)

    def _term_parts(self, term: str) -> tuple[str, ...]:
        parts = TERM_PARTS[term]
        if term == "prior_matching" and self.hparams.prior_divergence == "mmd":
            return tuple(p for p in parts if p != "prior_critic")
        return parts

    # ----------------------------------------------------------------------------- parts and optimisers
    def train(self, mode: bool = True) -> CycleRetrieval:
        """Frozen parts stay in eval mode (fixed batch-norm statistics)."""
        super().train(mode)
        for part in PARTS:
            if part not in self.trainable:
                getattr(self.net, part).eval()
        return self

    def optimizer_parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        # Both optimisers hold every parameter of their side whatever the stage freezes (frozen ones
        # get no gradient and are skipped): the state layout is the same in every stage and resumes.
        generator = [
            p for part in PARTS if part not in CRITIC_PARTS for p in getattr(self.net, part).parameters()
        ]
        critics = [p for part in CRITIC_PARTS for p in getattr(self.net, part).parameters()]
        return {"main": generator, "critic": critics}

    # ----------------------------------------------------------------------------- loss terms
    def _encode(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        net = self.net
        f_i, f_t = net.image_encoder(batch["image"]), net.text_encoder(batch["ids"])
        return {"f_i": f_i, "f_t": f_t, "z_i": net.image_to_latent(f_i), "z_t": net.text_to_latent(f_t)}

    def _row_weights(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        paired = batch["paired"].float()
        every = torch.ones_like(paired) if self.hparams.use_unpaired else paired
        return {"paired": paired, "every": every, "unpaired": every * (1.0 - paired)}

    def generator_terms(self, batch: dict[str, Tensor], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every active term of the generator objective (see module doc), unweighted."""
        net, hp = self.net, self.hparams
        kind = hp.adversarial
        rows = self._row_weights(batch)
        paired, every, unpaired = rows["paired"], rows["every"], rows["unpaired"]
        f_i, f_t, z_i, z_t = out["f_i"], out["f_t"], out["z_i"], out["z_t"]
        terms: dict[str, Tensor] = {}
        if "auto" in self.active:
            terms["auto"] = losses.reconstruction(
                net.image_decoder(f_i), batch["image"], every
            ) + losses.token_reconstruction(net.text_decoder(f_t, batch["ids"]), batch["ids"], every)
        if "embedding_auto" in self.active:
            terms["embedding_auto"] = losses.reconstruction(
                net.latent_to_image(z_i), f_i, every
            ) + losses.reconstruction(net.latent_to_text(z_t), f_t, every)
        text_of_image, image_of_text = net.latent_to_text(z_i), net.latent_to_image(z_t)
        if "cycle" in self.active or "unpaired_retrieval" in self.active:
            z_i_cycled, z_t_cycled = net.text_to_latent(text_of_image), net.image_to_latent(image_of_text)
        if "cycle" in self.active:
            terms["cycle"] = losses.reconstruction(
                net.latent_to_image(z_i_cycled), f_i, every
            ) + losses.reconstruction(net.latent_to_text(z_t_cycled), f_t, every)
        if "paired_reconstruction" in self.active:
            terms["paired_reconstruction"] = losses.reconstruction(
                text_of_image, f_t, paired
            ) + losses.reconstruction(image_of_text, f_i, paired)
        if "latent_adversarial" in self.active:
            terms["latent_adversarial"] = losses.generator_loss(
                net.image_latent_critic, z_t, every, kind, real=z_i
            ) + losses.generator_loss(net.text_latent_critic, z_i, every, kind, real=z_t)
        if "domain_adversarial" in self.active:
            terms["domain_adversarial"] = losses.generator_loss(
                net.image_domain_critic, image_of_text, every, kind, real=f_i
            ) + losses.generator_loss(net.text_domain_critic, text_of_image, every, kind, real=f_t)
        if "prior_matching" in self.active:
            latents, both = torch.cat([z_i, z_t]), torch.cat([every, every])
            if hp.prior_divergence == "mmd":
                terms["prior_matching"] = losses.mmd_to_prior(latents, both, torch.randn_like(latents))
            else:  # -E[C_P(z)] (WGAN; its level held by the drift penalty) or BCE: no random value
                terms["prior_matching"] = losses.generator_loss(net.prior_critic, latents, both, kind)
        triplet = dict(margin=hp.margin, hardest=self.uses_hardest_negative)
        if "paired_retrieval" in self.active:
            terms["paired_retrieval"] = losses.triplet_ranking(z_i, z_t, paired, **triplet)
        if "unpaired_retrieval" in self.active:
            terms["unpaired_retrieval"] = losses.triplet_ranking(
                z_i, z_i_cycled, unpaired, **triplet
            ) + losses.triplet_ranking(z_t_cycled, z_t, unpaired, **triplet)
        return terms

    def critic_terms(self, batch: dict[str, Tensor], out: dict[str, Tensor]) -> Tensor:
        """The critics' losses on detached generator outputs (real/fake as in the module doc)."""
        net, hp = self.net, self.hparams
        every = self._row_weights(batch)["every"]
        f_i, f_t, z_i, z_t = out["f_i"], out["f_t"], out["z_i"], out["z_t"]
        args = dict(kind=hp.adversarial, gp_weight=hp.gp_weight, drift_weight=hp.drift_weight)
        terms = []  # summed in this order, each drawing its own random numbers (gradient penalty)
        if "latent_adversarial" in self.critic_terms_on:
            terms.append(losses.critic_loss(net.image_latent_critic, z_i, z_t, every, every, **args))
            terms.append(losses.critic_loss(net.text_latent_critic, z_t, z_i, every, every, **args))
        if "domain_adversarial" in self.critic_terms_on:
            with torch.no_grad():
                image_of_text, text_of_image = net.latent_to_image(z_t), net.latent_to_text(z_i)
            terms.append(
                losses.critic_loss(net.image_domain_critic, f_i, image_of_text, every, every, **args)
            )
            terms.append(losses.critic_loss(net.text_domain_critic, f_t, text_of_image, every, every, **args))
        if "prior_matching" in self.critic_terms_on:
            latents, both = torch.cat([z_i, z_t]), torch.cat([every, every])
            prior = torch.randn_like(latents)
            terms.append(
                losses.critic_loss(net.prior_critic, prior, latents, torch.ones_like(both), both, **args)
            )
        return sum(terms, z_i.new_zeros(()))

    # ----------------------------------------------------------------------------- steps
    def _backward_and_step(self, optimizer: Any, loss: Tensor) -> None:
        """Zero, backward (without DDP's reducer), average the gradients over the ranks, step."""
        optimizer.zero_grad(set_to_none=True)
        distributed = self.world_size > 1
        strategy = self.trainer.strategy if distributed else None
        with strategy.block_backward_sync() if hasattr(strategy, "block_backward_sync") else nullcontext():
            self.manual_backward(loss)
        if distributed:
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            if grads:  # the same parameters have gradients on every rank: the same terms run everywhere
                flat = _flatten_dense_tensors(grads)
                dist.all_reduce(flat)
                flat /= self.world_size
                for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
                    grad.copy_(synced)
        optimizer.step()

    @staticmethod
    def _spread(z: Tensor, weight: Tensor) -> Tensor:
        """``1 - ||weighted mean of the unit rows||^2``: the mean squared distance of unit latents to
        their mean; 0 when they are all the same."""
        mean = (F.normalize(z, dim=1) * weight[:, None]).sum(0) / weight.sum().clamp_min(1.0)
        return 1.0 - mean.pow(2).sum()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        opt_generator, opt_critic = self.optimizers()
        hp = self.hparams
        out = self._encode(batch)
        logged = []  # (name, value, the rows it is a mean over)
        if self.adversarial_on and hp.n_critic > 0:
            critic = out["z_i"].new_zeros(())
            stepped = batch_idx % hp.critic_every == 0
            if stepped:
                detached = {k: v.detach() for k, v in out.items()}
                for _ in range(hp.n_critic):
                    critic = self.critic_terms(batch, detached)
                    self._backward_and_step(opt_critic, critic)
            logged.append(("train/critic", critic.detach(), float(stepped)))
        terms = self.generator_terms(batch, out)
        loss = sum(self.weights[t] * v for t, v in terms.items())
        self._backward_and_step(opt_generator, loss)
        rows = self._row_weights(batch)
        for term, value in terms.items():
            logged.append((f"train/{term}", value.detach(), rows[TERM_ROWS.get(term, "every")].sum()))
        every = rows["every"]
        latent_spread = (self._spread(out["z_i"], every) + self._spread(out["z_t"], every)) / 2
        logged.append(("train/latent_spread", latent_spread.detach(), every.sum()))
        if "paired_retrieval" in terms:
            paired = rows["paired"]
            spread = (self._spread(out["z_i"], paired) + self._spread(out["z_t"], paired)).detach() / 2
            self._retrieval_epoch += (
                torch.stack([terms["paired_retrieval"].detach(), spread, torch.ones_like(spread)])
                * paired.sum()
            )
        names, values, counts = zip(*logged)
        counts = torch.stack([torch.as_tensor(c, device=loss.device).float() for c in counts])
        self.log_train_values(names, torch.stack(values), counts)
        return loss.detach()

    @property
    def uses_hardest_negative(self) -> bool:
        """Whether this epoch's triplet terms take the hardest negative (after the stage's warm-up)."""
        hp = self.hparams
        return bool(hp.hardest_negative) and self.current_epoch >= hp.hardest_negative_after

    def training_epoch_finished(self) -> None:
        """With hardest negatives: log (and warn about) an epoch whose hardest-negative loss collapsed."""
        sums, self._retrieval_epoch = self._retrieval_epoch, torch.zeros_like(self._retrieval_epoch)
        if not (self.uses_hardest_negative and "paired_retrieval" in self.active):
            return
        sums = self.reduce_sum(sums)
        if float(sums[2]) == 0:
            return
        mean, spread = float(sums[0] / sums[2]), float(sums[1] / sums[2])
        ceiling = 2 * self.hparams.margin
        collapsed = abs(mean - ceiling) <= COLLAPSE_TOLERANCE * ceiling and spread < COLLAPSED_SPREAD
        self.log("train/retrieval_collapsed", float(collapsed))
        if collapsed and (self._trainer is None or self._trainer.is_global_zero):
            log.warning(
                "epoch %d: the hardest-negative loss collapsed: %.4f, at 2m = %.2f, with the paired latents' "
                "spread at %.4f (every embedding nearly the same, so every similarity is equal)",
                self.current_epoch,
                mean,
                ceiling,
                spread,
            )

    def forward(self, image: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.embed_images(image), self.net.embed_captions(ids)

    def auto_reconstruction(self, image: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(f_I [B, d], f_T [5B, d], the auto term)`` on evaluation items: ``image [B, 3, H, W]``
        and ``ids [B, 5, L]`` (all five captions of each image; the embeddings are reused)."""
        net = self.net
        flat = ids.reshape(-1, ids.shape[-1])
        f_i, f_t = net.image_encoder(image), net.text_encoder(flat)
        ones_i, ones_t = f_i.new_ones(len(f_i)), f_t.new_ones(len(f_t))
        auto = losses.reconstruction(net.image_decoder(f_i), image, ones_i) + losses.token_reconstruction(
            net.text_decoder(f_t, flat), flat, ones_t
        )
        return f_i, f_t, auto

    def latent_reconstructions(self, f_i: Tensor, f_t: Tensor, z_i: Tensor, z_t: Tensor) -> dict[str, Tensor]:
        """``embedding_auto``, ``paired_reconstruction`` (each image with each of its five captions)
        and ``cycle`` on evaluation items (``f_T``, ``z_T``: ``[5B, d]``, rows ``5i..5i+4`` of image i)."""
        net = self.net
        ones_i, ones_t = f_i.new_ones(len(f_i)), f_t.new_ones(len(f_t))
        per_caption = len(f_t) // max(1, len(f_i))
        f_i5, z_i5 = f_i.repeat_interleave(per_caption, 0), z_i.repeat_interleave(per_caption, 0)
        mse = losses.reconstruction
        return {
            "embedding_auto": mse(net.latent_to_image(z_i), f_i, ones_i)
            + mse(net.latent_to_text(z_t), f_t, ones_t),
            "paired_reconstruction": mse(net.latent_to_text(z_i5), f_t, ones_t)
            + mse(net.latent_to_image(z_t), f_i5, ones_t),
            "cycle": mse(net.latent_to_image(net.text_to_latent(net.latent_to_text(z_i))), f_i, ones_i)
            + mse(net.latent_to_text(net.image_to_latent(net.latent_to_image(z_t))), f_t, ones_t),
        }

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        f_i, f_t, auto = self.auto_reconstruction(batch["image"], batch["ids"])
        z_i, z_t = self.net.image_to_latent(f_i), self.net.text_to_latent(f_t)  # z_t [5B, d], rows 5i..5i+4
        values = {"auto": auto, **self.latent_reconstructions(f_i, f_t, z_i, z_t)}
        for term, metric in self.reconstruction[split].items():
            metric.update(values[term], weight=len(f_i))
        self.retrieval[split].update(z_i, z_t)

    def evaluation_epoch_end(self, split: str) -> None:
        scores = self.retrieval[split].compute()
        for term, metric in self.reconstruction[split].items():
            scores[term] = metric.compute()
        self.log_dict({f"{split}/{k}": v for k, v in scores.items()})

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {"image_embedding": F.normalize(self.net.embed_images(batch["image"]), dim=1)}

    def export_metadata(self) -> dict[str, Any]:
        return {
            "kind": "cycle_retrieval",
            "latent": "cosine of E_I(Img_enc(x)) and E_T(Txt_enc(w))",
            "trainable": list(self.trainable),
            "loss_weights": {t: w for t, w in self.weights.items() if w > 0},
        }
