"""LightningModule of seed 003: multimodal fusion + multi-task learning on CrisisMMD.

One module for every row of the seed's Tables 1-3: the fusion is part of the network
(``net.fusion``: concat / tensor / graph / hierarchical_graph) and ``multitask`` picks how the task
losses are combined:

* ``equal``: ``sum_f L_f`` (the seed's ЛСРВ baseline);
* ``mgda``: MGDA-UB min-norm weights from the gradients w.r.t. the fused vector ``G``
  (:func:`~lit_modules.graph_fusion.multitask.min_norm_weights`), ``T * sum_f alpha_f L_f``;
* ``dbn``: the seed's dynamic multi-task learning: focal loss per output, task weights updated every
  step (eq. 11) and rebalanced every epoch (:class:`~lit_modules.graph_fusion.multitask.DynamicTaskWeights`).

``L_f`` is the mean one-vs-rest loss over the labelled samples of task f in the batch (a sample
without a label for task f is masked out of L_f and of task f's metrics). ``sample_loss: auto``
means focal for ``dbn`` and binary cross-entropy for the baselines (``focal``/``bce`` force one).
Automatic optimisation throughout: the extra gradients (per-task ``G_W^(f)``, MGDA's per-task
gradients) are taken with ``torch.autograd.grad`` before the step's single backward.

Logged: ``<split>/loss`` (the unweighted sum of the task losses: the monitor of `crisismmd_real`, as in the seed),
``<split>/<task>/loss``, ``<split>/<task>/{F1_macro,F1_weighted,HL,accuracy,MAP}``, their means
over tasks ``<split>/{F1_macro,...}``, and ``train/weight/<task>``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from lit_modules.base import SuiteModule
from lit_modules.graph_fusion.multitask import DynamicTaskWeights, min_norm_weights
from lit_modules.graph_fusion.networks import MultimodalMultiTaskNet
from lit_modules.losses import one_vs_rest_loss
from lit_modules.metrics.multitask import TASK_SCORE_NAMES, MultiTaskScores

log = logging.getLogger(__name__)

MULTITASK_MODES = ("equal", "mgda", "dbn")


class GraphFusionMultiTask(SuiteModule):
    """Training and evaluation of :class:`~lit_modules.graph_fusion.networks.MultimodalMultiTaskNet`.

    Args:
        net: the network (``self.net``; what the export writes).
        optimizer, scheduler: ``functools.partial`` objects (``conf/optimizer``, ``conf/scheduler``).
        multitask: ``equal``, ``mgda`` or ``dbn``.
        sample_loss: ``auto``, ``focal`` or ``bce``.
        focal_beta: beta of the focal loss (seed: 2).
        dbn_alpha, dbn_lr: alpha of eq. 11 (seed: 1) and the task-weight step size.
        dbn_layer: ``head`` (each task's own head weights, seed) or ``shared`` (the shared last layer,
            GradNorm; needs ``net.shared_hidden``).
        epoch_rebalance: the epoch-level rebalancing of DBN.
        mgda_normalize: gradient normalisation before the min-norm solver: ``none``, ``l2`` or ``loss``.
        task_positives, num_train: the training samples of each task outside its negative class
            (``m_f``) and in all (``M``), for DBN's ``M / m_f`` (from the data).
        feature_fingerprints: ``{modality: encoder digest}`` of precomputed features the data serves
            (from the data); a frozen encoder of this network must give the same digest.
    """

    def __init__(
        self,
        net: MultimodalMultiTaskNet,
        optimizer: Any,
        scheduler: Any = None,
        multitask: str = "dbn",
        sample_loss: str = "auto",
        focal_beta: float = 2.0,
        dbn_alpha: float = 1.0,
        dbn_lr: float = 0.025,
        dbn_layer: str = "head",
        epoch_rebalance: bool = True,
        mgda_normalize: str = "none",
        scheduler_interval: str = "epoch",
        task_positives: dict[str, int] | None = None,
        num_train: int | None = None,
        feature_fingerprints: dict[str, str] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        if multitask not in MULTITASK_MODES:
            raise ValueError(f"multitask must be one of {MULTITASK_MODES}, got {multitask!r}")
        if dbn_layer not in ("head", "shared"):
            raise ValueError(f"dbn_layer must be 'head' or 'shared', got {dbn_layer!r}")
        if sample_loss == "auto":
            sample_loss = "focal" if multitask == "dbn" else "bce"
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.task_names = list(net.tasks)
        self.sample_loss = sample_loss
        self.task_weights = DynamicTaskWeights(len(self.task_names), alpha=dbn_alpha, lr=dbn_lr)
        if task_positives and num_train:
            self.task_weights.set_positive_counts([task_positives[t] for t in self.task_names], num_train)
            log.info(
                "DBN inverse positive shares M/m_f (mean 1): %s",
                dict(zip(self.task_names, self.task_weights.inverse_positive_share.tolist())),
            )
        # One metric object per split for every task's scores (one update per step, no value checks,
        # no host-device synchronisation; see lit_modules.metrics.multitask).
        self.scores = nn.ModuleDict({s: MultiTaskScores(net.tasks) for s in ("val", "test")})

    # ----------------------------------------------------------------------------- losses
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Any]:
        return self.net(batch)

    def task_losses(self, logits: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(L [T], present [T] bool)``: masked one-vs-rest loss of every task (``labels [n, T]``, -1 = none)."""
        losses, present = [], []
        for f, task in enumerate(self.task_names):
            loss, count = one_vs_rest_loss(
                logits[task], labels[:, f], kind=self.sample_loss, beta=self.hparams.focal_beta
            )
            losses.append(loss)
            present.append(count > 0)
        return torch.stack(losses), torch.stack(present)

    def _train_log_names(self) -> list[str]:
        names = [f"train/{t}/loss" for t in self.task_names]
        if self.hparams.multitask in ("dbn", "mgda"):
            names += [f"train/weight/{t}" for t in self.task_names]
        if self.hparams.multitask == "dbn":
            names.append("train/dbn_LD")
        return names

    def _reduce_mean(self, value: Tensor) -> Tensor:
        """Average across DDP ranks so every rank keeps the same task weights."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return value
        return trainer.strategy.reduce(value, reduce_op="mean")

    def _dbn_loss(self, losses: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(sum_f w_f L_f, w [T] used this step, L_D)``; the weights are then updated (eq. 11)."""
        weights = self.task_weights.current().to(losses.device)
        weighted = weights * losses
        norms = torch.zeros(len(self.task_names), device=losses.device)
        for f, task in enumerate(self.task_names):
            # a task without labels in the batch has a zero loss, hence a zero norm (no branch on
            # device values: that would synchronise every step)
            layer = (
                self.net.head_weight(task) if self.hparams.dbn_layer == "head" else self.net.shared_weight()
            )
            (grad,) = torch.autograd.grad(weighted[f], layer, retain_graph=True)
            norms[f] = grad.norm()
        stats = self._reduce_mean(torch.stack([norms, losses.detach(), present.float()]))
        norms, mean_losses, share = stats[0], stats[1], stats[2]
        present_all = share > 0
        mean_losses = torch.where(present_all, mean_losses / share.clamp_min(1e-12), mean_losses)
        self.task_weights.record(mean_losses, present_all)
        l_d = self.task_weights.step_update(norms, mean_losses, present_all)
        return weighted.sum(), weights, l_d.to(losses.device)

    def _mgda_loss(self, losses: Tensor, present: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        idx = [f for f in range(len(self.task_names)) if present[f]]
        if len(idx) < 2:
            return losses.sum(), present.float()
        grads = []
        for f in idx:
            (g,) = torch.autograd.grad(losses[f], features, retain_graph=True)
            norm = self.hparams.mgda_normalize
            if norm == "l2":
                g = g / g.norm().clamp_min(1e-12)
            elif norm == "loss":
                g = g / losses[f].detach().clamp_min(1e-12)
            grads.append(g.reshape(-1))
        alpha = min_norm_weights(grads).to(losses.device)
        alpha = self._reduce_mean(alpha)
        full = torch.zeros(len(self.task_names), device=losses.device)
        full[idx] = alpha
        return len(self.task_names) * (full * losses).sum(), full * len(self.task_names)

    # ----------------------------------------------------------------------------- steps
    def check_feature_cache(self) -> None:
        """Refuse precomputed features that this network's frozen encoders would not give: a modality
        whose encoder trains, or a fingerprint that differs (another checkpoint, another random init)."""
        from datamodules.feature_cache import encoder_fingerprint

        cached = self.hparams.feature_fingerprints or {}
        frozen = self.net.frozen_modalities()
        for modality, fingerprint in cached.items():
            if modality not in self.net.modalities:
                continue
            if modality not in frozen:
                raise ValueError(
                    f"features of {modality!r} are cached (data.features_dir), but its encoder trains here; "
                    f"freeze it (model.net.freeze=[{modality}]) or drop data.features_dir"
                )
            if encoder_fingerprint(self.net.encoders[modality]) != fingerprint:
                raise ValueError(
                    f"the cached {modality!r} features (data.features_dir) come from another encoder "
                    "(weights differ: pretrained checkpoint or seed); re-run experiments.precompute_features"
                )

    def on_fit_start(self) -> None:
        self.check_feature_cache()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch)
        labels = batch["labels"]
        losses, present = self.task_losses(out["logits"], labels)
        mode = self.hparams.multitask
        # Per-task values go to epoch means (one tensor add per step; see EpochMeans): the task
        # losses weighted by the labelled samples of each task, the task weights, DBN's L_D.
        values, counts = [losses], [(labels >= 0).sum(0)]
        if mode == "dbn":
            total, weights, l_d = self._dbn_loss(losses, present)
            values += [weights, l_d.view(1)]
        elif mode == "mgda":
            total, weights = self._mgda_loss(losses, present, out["features"])
            values.append(weights)
        else:
            total = losses.sum()
        ones = torch.ones(len(self._train_log_names()) - len(self.task_names), device=losses.device)
        self.log_train_values(
            self._train_log_names(), torch.cat(values), torch.cat([counts[0].float(), ones])
        )
        return total

    def training_epoch_finished(self) -> None:
        if self.hparams.multitask == "dbn" and self.hparams.epoch_rebalance:
            weights = self.task_weights.epoch_rebalance()
            log.info(
                "DBN epoch rebalance -> %s",
                dict(zip(self.task_names, [round(w, 4) for w in weights.tolist()])),
            )
        else:
            self.task_weights.epoch_loss_sum.zero_()
            self.task_weights.epoch_loss_count.zero_()

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        out = self(batch)
        labels = batch["labels"]
        losses, _ = self.task_losses(out["logits"], labels)
        self.log(f"{split}/loss", losses.sum(), on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.scores[split].update(out["logits"], labels, losses)

    def evaluation_epoch_end(self, split: str) -> None:
        # compute() has already synchronised the states across ranks: every rank logs the same values
        self.log_dict({f"{split}/{key}": value for key, value in self.scores[split].compute().items()})
        self.scores[split].reset()

    def on_test_start(self) -> None:
        self.check_feature_cache()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self(batch)
        return {t: logits.sigmoid() for t, logits in out["logits"].items()}

    def export_metadata(self) -> dict[str, Any]:
        return {
            "kind": "graph_fusion_multitask",
            "tasks": dict(self.net.tasks),
            "modalities": self.net.modalities,
            "fusion": self.net.fusion_kind,
            "multitask": self.hparams.multitask,
            "scores": "sigmoid one-vs-rest; the class of a task is the argmax",
            "task_score_names": list(TASK_SCORE_NAMES) + ["MAP"],
        }
