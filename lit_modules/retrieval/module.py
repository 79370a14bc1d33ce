"""LightningModule of the cycle-consistent image-text embedder (seed 004), trained in stages.

With ``f_I, f_T`` the autoencoder embeddings, ``z_I = E_I(f_I)``, ``z_T = E_T(f_T)`` and ``s`` the
cosine similarity, the training objective of a stage is ``sum_t lambda_t L_t`` over the terms

=======================  =====================================================================  =========
term                     formula                                                                rows
=======================  =====================================================================  =========
``auto``                 ``||Img_dec(f_I) - x||^2 + CE(Txt_dec(f_T), w)``                          all
``embedding_auto``       ``||D_I(z_I) - f_I||^2 + ||D_T(z_T) - f_T||^2``                           all
``cycle``                ``||D_I(E_T(D_T(z_I))) - f_I||^2 + ||D_T(E_I(D_I(z_T))) - f_T||^2``       all
``paired_reconstruction````||D_T(z_I) - f_T||^2 + ||D_I(z_T) - f_I||^2``                           pairs
``latent_adversarial``   critics ``C^Z_I, C^Z_T`` cannot tell ``z_I`` from ``z_T``                   all
``domain_adversarial``   critics ``C_I, C_T`` cannot tell ``f_I`` from ``D_I(z_T)``, ``f_T`` from ``D_T(z_I)``  all
``paired_retrieval``     triplet ``[m - s(z_I, z_T) + s(z_I, z_T')]_+ + ...`` (margin 0.2)          pairs
``unpaired_retrieval``   the same on cycle-made pseudo-pairs ``(z_I, E_T(D_T(z_I)))``,
                         ``(E_I(D_I(z_T)), z_T)``                                                 unpaired
=======================  =====================================================================  =========

"all" rows are pairs plus the unpaired images and captions of the batch; ``use_unpaired: false``
restricts every term to the pairs (the "unpaired terms off" control and the VSE++ baseline).
``loss_weights`` switches terms on (0 or missing: off) and ``trainable`` names the parts that update;
the rest are frozen (no gradients, eval mode). The experiments chain stages (autoencoders -> latent
maps -> joint) that set both, and each stage's checkpoint monitor, through ordinary ``stages:``
overrides; the autoencoder stage is picked by ``val/auto`` (min), since its latent maps are still
random there.
Validation and test log ``<split>/auto``, the ``auto`` term on the evaluation images and all five
captions of each, besides the retrieval metrics. Adversarial terms use manual optimisation:
``n_critic`` critic steps (critic optimiser over the four critics) then one generator step
(generator optimiser over the other eight parts); both optimisers' states are checkpointed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import MeanMetric

from lit_modules.base import SuiteModule
from lit_modules.metrics import CocoRetrievalMetrics
from lit_modules.retrieval import losses
from lit_modules.retrieval.networks import CRITIC_PARTS, PARTS, CycleRetrievalNet

TERMS = (
    "auto",
    "embedding_auto",
    "cycle",
    "paired_reconstruction",
    "latent_adversarial",
    "domain_adversarial",
    "paired_retrieval",
    "unpaired_retrieval",
)
ADVERSARIAL = ("latent_adversarial", "domain_adversarial")


class CycleRetrieval(SuiteModule):
    """Args:
    net: the twelve parts.
    optimizer: ``functools.partial`` of the generator optimiser (``conf/optimizer``).
    critic_optimizer: ``functools.partial`` of the critic optimiser (``None``: the generator's).
        Each optimiser gets its own scheduler from ``scheduler``.
    trainable: the parts this stage updates (``None``: all twelve).
    loss_weights: ``{term: lambda}``; missing terms are off.
    use_unpaired: whether unpaired rows reach the loss terms.
    margin, hardest_negative: the triplet loss (0.2; VSE++: hardest negative).
    adversarial: ``wgan_gp`` or ``bce``; ``gp_weight``, ``n_critic``: its settings.
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
        adversarial: str = "wgan_gp",
        gp_weight: float = 10.0,
        n_critic: int = 1,
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
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler", "critic_optimizer"])
        self.automatic_optimization = False
        self.net = net
        self.trainable = trainable
        self.weights = {t: float(weights.get(t, 0.0)) for t in TERMS}
        self.active = [t for t in TERMS if self.weights[t] > 0]
        self.adversarial_on = any(t in self.active for t in ADVERSARIAL)
        for part in PARTS:
            getattr(net, part).requires_grad_(part in trainable)
        self.retrieval = torch.nn.ModuleDict({s: CocoRetrievalMetrics() for s in ("val", "test")})
        self.reconstruction = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

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

    def _row_weights(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        paired = batch["paired"].float()
        every = torch.ones_like(paired) if self.hparams.use_unpaired else paired
        return paired, every

    def generator_terms(self, batch: dict[str, Tensor], out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every active term of the generator objective (see module doc), unweighted."""
        net, kind = self.net, self.hparams.adversarial
        paired, every = self._row_weights(batch)
        unpaired = every * (1.0 - paired)
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
                net.image_latent_critic, z_t, every, kind
            ) + losses.generator_loss(net.text_latent_critic, z_i, every, kind)
        if "domain_adversarial" in self.active:
            terms["domain_adversarial"] = losses.generator_loss(
                net.image_domain_critic, image_of_text, every, kind
            ) + losses.generator_loss(net.text_domain_critic, text_of_image, every, kind)
        triplet = dict(margin=self.hparams.margin, hardest=self.hparams.hardest_negative)
        if "paired_retrieval" in self.active:
            terms["paired_retrieval"] = losses.triplet_ranking(z_i, z_t, paired, **triplet)
        if "unpaired_retrieval" in self.active:
            terms["unpaired_retrieval"] = losses.triplet_ranking(
                z_i, z_i_cycled, unpaired, **triplet
            ) + losses.triplet_ranking(z_t_cycled, z_t, unpaired, **triplet)
        return terms

    def critic_terms(self, batch: dict[str, Tensor], out: dict[str, Tensor]) -> Tensor:
        """The four critics' losses on detached generator outputs (real/fake as in the module doc)."""
        net, hp = self.net, self.hparams
        _, every = self._row_weights(batch)
        loss = out["z_i"].new_zeros(())
        args = dict(kind=hp.adversarial, gp_weight=hp.gp_weight)
        if "latent_adversarial" in self.active:
            loss = loss + losses.critic_loss(
                net.image_latent_critic, out["z_i"], out["z_t"], every, every, **args
            )
            loss = loss + losses.critic_loss(
                net.text_latent_critic, out["z_t"], out["z_i"], every, every, **args
            )
        if "domain_adversarial" in self.active:
            with torch.no_grad():
                image_of_text, text_of_image = net.latent_to_image(out["z_t"]), net.latent_to_text(out["z_i"])
            loss = loss + losses.critic_loss(
                net.image_domain_critic, out["f_i"], image_of_text, every, every, **args
            )
            loss = loss + losses.critic_loss(
                net.text_domain_critic, out["f_t"], text_of_image, every, every, **args
            )
        return loss

    # ----------------------------------------------------------------------------- steps
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        opt_generator, opt_critic = self.optimizers()
        out = self._encode(batch)
        names, values = [], []
        if self.adversarial_on and self.hparams.n_critic > 0:
            detached = {k: v.detach() for k, v in out.items()}
            for _ in range(self.hparams.n_critic):
                critic = self.critic_terms(batch, detached)
                opt_critic.zero_grad(set_to_none=True)
                self.manual_backward(critic)
                opt_critic.step()
            names.append("train/critic")
            values.append(critic.detach())
        terms = self.generator_terms(batch, out)
        loss = sum(self.weights[t] * v for t, v in terms.items())
        opt_generator.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_generator.step()
        names += [f"train/{t}" for t in terms]
        values += [v.detach() for v in terms.values()]
        if values:
            self.log_train_values(names, torch.stack(values))
        return loss.detach()

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

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        f_i, f_t, auto = self.auto_reconstruction(batch["image"], batch["ids"])
        self.reconstruction[split].update(auto, weight=len(f_i))
        z_i, z_t = self.net.image_to_latent(f_i), self.net.text_to_latent(f_t)  # z_t [5B, d], rows 5i..5i+4
        self.retrieval[split].update(z_i, z_t)

    def evaluation_epoch_end(self, split: str) -> None:
        scores = self.retrieval[split].compute()
        scores["auto"] = self.reconstruction[split].compute()
        self.log_dict({f"{split}/{k}": v for k, v in scores.items()})
        self.retrieval[split].reset()
        self.reconstruction[split].reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return {
            "image_embedding": torch.nn.functional.normalize(self.net.embed_images(batch["image"]), dim=1)
        }

    def export_metadata(self) -> dict[str, Any]:
        return {
            "kind": "cycle_retrieval",
            "latent": "cosine of E_I(Img_enc(x)) and E_T(Txt_enc(w))",
            "trainable": list(self.trainable),
            "loss_weights": {t: w for t, w in self.weights.items() if w > 0},
        }
