"""LightningModule of seed 003: multimodal fusion + multi-task learning on CrisisMMD.

One module for every row of the seed's Tables 1-3: the fusion is part of the network
(``net.fusion``: concat / tensor / graph / hierarchical_graph) and ``multitask`` picks how the task
losses are combined:

* ``equal``: ``sum_f L_f`` (the seed's ЛСРВ baseline);
* ``mgda``: MGDA-UB min-norm weights from the gradients w.r.t. the fused vector ``G``
  (:func:`~lit_modules.graph_fusion.multitask.min_norm_weights_from_gram`), ``T * sum_f alpha_f L_f``;
* ``dbn``: the seed's dynamic multi-task learning: focal loss per output, task weights updated every
  step (eq. 11) and re-balanced every epoch (:class:`~lit_modules.graph_fusion.multitask.DynamicTaskWeights`).

``L_f`` is task f's one-vs-rest loss, averaged over the labelled samples of the batch (a sample
without a label for task f is masked out of L_f and of task f's metrics) and over the task's C outputs
(``class_reduction: mean``; ``sum`` adds them, the old statistics). ``sample_loss: auto`` means focal for
``dbn`` and binary cross-entropy for the baselines (``focal``/``bce`` force one, so each weighting can
be run with either loss). Automatic optimisation throughout: the extra gradients (per-task ``G_W^(f)``,
MGDA's per-task gradients) are taken with ``torch.autograd.grad`` before the step's single backward.

**DDP.** Every rank runs the same collectives every step, whatever its batch holds: the labelled
counts of each task are summed over ranks, and each rank's task loss is scaled so that DDP's gradient
average equals the gradient of the global batch mean (a rank without labels for a task contributes a
zero); DBN sums its head gradients over ranks before taking their norms, MGDA sums the Gram matrix of
its task gradients, so every rank derives the same weights from the same global statistics.

Logged: ``<split>/loss`` (the unweighted sum of the task losses: the monitor of `crisismmd_real`, as in
the seed), ``<split>/<task>/loss``, ``<split>/<task>/{F1_macro,F1_weighted,HL,accuracy,MAP}``, their means
over tasks ``<split>/{F1_macro,...}``, ``train/weight/<task>`` (with ``epoch_rebalance: factor``, the
weights times the epoch factors) and, for the graph fusions at test time, the spread of the dynamic
edge weights (``test/fusion/...``, :mod:`lit_modules.graph_fusion.edge_weights`, and the figure
``figures/edge_weights_test.png``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from lit_modules.base import SuiteModule, check_choice, per_split
from lit_modules.graph_fusion.edge_weights import EdgeWeightStats, log_edge_weight_figure
from lit_modules.graph_fusion.fusion import GraphFusion, node_names
from lit_modules.graph_fusion.multitask import EPOCH_REBALANCE, DynamicTaskWeights, min_norm_weights_from_gram
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
        class_reduction: ``mean`` (per-output mean of a task's C one-vs-rest terms) or ``sum``.
        dbn_alpha, dbn_lr: alpha of eq. 11 (seed: 1) and the task-weight step size.
        dbn_layer: ``head`` (each task's own head weights, seed) or ``shared`` (the shared last layer,
            GradNorm; needs ``net.shared_hidden``).
        dbn_grad_norm: ``per_output`` (a head's gradient norm as the RMS over its outputs, independent
            of the number of classes) or ``full`` (the plain Frobenius norm).
        epoch_rebalance: the epoch level of DBN, ``multiply``, ``replace``, ``factor`` or ``none``
            (``true``/``false``: ``replace``/``none``, the old switch).
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
        class_reduction: str = "mean",
        dbn_alpha: float = 1.0,
        dbn_lr: float = 0.025,
        dbn_layer: str = "head",
        dbn_grad_norm: str = "per_output",
        epoch_rebalance: str | bool = "multiply",
        mgda_normalize: str = "none",
        scheduler_interval: str = "epoch",
        task_positives: dict[str, int] | None = None,
        num_train: int | None = None,
        feature_fingerprints: dict[str, str] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        if isinstance(epoch_rebalance, bool):
            epoch_rebalance = "replace" if epoch_rebalance else "none"
        check_choice("multitask", multitask, MULTITASK_MODES)
        check_choice("dbn_layer", dbn_layer, ("head", "shared"))
        check_choice("dbn_grad_norm", dbn_grad_norm, ("per_output", "full"))
        check_choice("class_reduction", class_reduction, ("mean", "sum"))
        check_choice("epoch_rebalance", epoch_rebalance, EPOCH_REBALANCE)
        check_choice("mgda_normalize", mgda_normalize, ("none", "l2", "loss"))
        if sample_loss == "auto":
            sample_loss = "focal" if multitask == "dbn" else "bce"
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.hparams.epoch_rebalance = epoch_rebalance
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
        # G_W^(f) as the RMS over a head's C outputs: sqrt(C) for averaged terms, 1/sqrt(C) for summed ones
        sizes = torch.tensor([float(net.tasks[t]) for t in self.task_names])
        scale = sizes.sqrt() if class_reduction == "mean" else sizes.rsqrt()
        use_scale = dbn_grad_norm == "per_output" and dbn_layer == "head"
        self.register_buffer(
            "grad_norm_scale", scale if use_scale else torch.ones_like(sizes), persistent=False
        )
        # One metric object per split for every task's scores (one update per step, no value checks,
        # no host-device synchronisation; see lit_modules.metrics.multitask).
        self.scores = per_split(lambda: MultiTaskScores(net.tasks))
        fusion = net.fusion
        self.edge_weights = (
            EdgeWeightStats(node_names(fusion.levels, net.modalities))
            if isinstance(fusion, GraphFusion)
            else None
        )

    # ----------------------------------------------------------------------------- losses
    def forward(self, batch: dict[str, Tensor], fusion_info: bool = False) -> dict[str, Any]:
        return self.net(batch, fusion_info=fusion_info)

    def task_losses(self, logits: dict[str, Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(L [T], counts [T])``: masked one-vs-rest loss of every task over its labelled samples of
        the batch (``labels [n, T]``, -1 = none) and the number of those samples."""
        losses, counts = [], []
        for f, task in enumerate(self.task_names):
            loss, count = one_vs_rest_loss(
                logits[task],
                labels[:, f],
                kind=self.sample_loss,
                beta=self.hparams.focal_beta,
                class_reduction=self.hparams.class_reduction,
            )
            losses.append(loss)
            counts.append(count)
        return torch.stack(losses), torch.stack(counts).float()

    def _train_log_names(self) -> list[str]:
        names = [f"train/{t}/loss" for t in self.task_names]
        if self.hparams.multitask in ("dbn", "mgda"):
            names += [f"train/weight/{t}" for t in self.task_names]
        if self.hparams.multitask == "dbn":
            names.append("train/dbn_LD")
        return names

    def _global_batch(self, losses: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(scaled [T], mean [T], total_counts [T])``: this rank's task losses scaled so that DDP's mean
        of the ranks' gradients is the gradient of the global batch's mean loss, the global mean
        losses (detached) and the labelled samples of each task over all ranks."""
        stats = self.reduce_sum(torch.stack([losses.detach() * counts, counts]))
        total = stats[1]
        mean = stats[0] / total.clamp_min(1)
        scaled = losses * (self.world_size * counts / total.clamp_min(1))
        return scaled, mean, total

    def _dbn_loss(self, scaled: Tensor, mean: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(sum_f c_f w_f L_f, c * w [T] used this step, L_D)``; the weights are then updated (eq. 11)."""
        weights = self.task_weights.current().to(scaled.device)
        factors = self.task_weights.epoch_factors.to(scaled.device)
        grads = []
        for f, task in enumerate(self.task_names):
            # a task without labels in the batch has a zero loss, hence a zero norm (no branch on
            # device values: that would synchronise every step)
            layer = (
                self.net.head_weight(task) if self.hparams.dbn_layer == "head" else self.net.shared_weight()
            )
            (grad,) = torch.autograd.grad(weights[f] * scaled[f], layer, retain_graph=True)
            grads.append(grad.reshape(-1))
        # the ranks' gradients averaged, as DDP will average the step's: the global batch's gradient
        flat = self.reduce_sum(torch.cat(grads)) / self.world_size
        norms = torch.stack([g.norm() for g in flat.split([g.numel() for g in grads])])
        norms = norms * self.grad_norm_scale.to(norms.device)
        self.task_weights.record(mean, present)
        l_d = self.task_weights.step_update(norms, mean, present)
        used = factors * weights
        return (used * scaled).sum(), used, l_d.to(scaled.device)

    def _mgda_loss(
        self, scaled: Tensor, mean: Tensor, present: Tensor, features: Tensor
    ) -> tuple[Tensor, Tensor]:
        """MGDA-UB on the global batch: the Gram matrix of the task gradients w.r.t. ``G``, summed over
        ranks (each rank's gradients are the global mean's times the world size), the min-norm weights
        from it on every rank alike; tasks without labels anywhere are left out of the solver."""
        t = len(self.task_names)
        grads = [torch.autograd.grad(scaled[f], features, retain_graph=True)[0].reshape(-1) for f in range(t)]
        g = torch.stack(grads)
        gram = self.reduce_sum(g @ g.T) / self.world_size**2
        norm = self.hparams.mgda_normalize
        if norm != "none":
            d = gram.diagonal().clamp_min(1e-24).sqrt() if norm == "l2" else mean.clamp_min(1e-12)
            gram = gram / (d[:, None] * d[None, :])
        # the solver is a few T x T operations on the host: one small copy per step
        keep = present.cpu()
        alpha = torch.zeros(t)
        if int(keep.sum()) >= 2:
            alpha[keep] = min_norm_weights_from_gram(gram.detach().cpu()[keep][:, keep])
        else:
            alpha = keep.float() / keep.float().sum().clamp_min(1) if keep.any() else torch.full((t,), 1 / t)
        alpha = alpha.to(scaled.device) * t
        return (alpha * scaled).sum(), alpha

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

    on_fit_start = on_test_start = check_feature_cache

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self(batch)
        labels = batch["labels"]
        losses, counts = self.task_losses(out["logits"], labels)
        scaled, mean, total = self._global_batch(losses, counts)
        present = total > 0
        mode = self.hparams.multitask
        # Per-task values go to epoch means (one tensor add per step; see EpochMeans): the task
        # losses weighted by the labelled samples of each task, the task weights, DBN's L_D.
        values = [losses]
        if mode == "dbn":
            total_loss, weights, l_d = self._dbn_loss(scaled, mean, present)
            values += [weights, l_d.view(1)]
        elif mode == "mgda":
            total_loss, weights = self._mgda_loss(scaled, mean, present, out["features"])
            values.append(weights)
        else:
            total_loss = scaled.sum()
        ones = torch.ones(len(self._train_log_names()) - len(self.task_names), device=losses.device)
        self.log_train_values(self._train_log_names(), torch.cat(values), torch.cat([counts, ones]))
        return total_loss

    def training_epoch_finished(self) -> None:
        mode = self.hparams.epoch_rebalance if self.hparams.multitask == "dbn" else "none"
        weights = self.task_weights.epoch_rebalance(mode)
        if mode != "none":
            log.info(
                "DBN epoch rebalance (%s) -> %s",
                mode,
                dict(zip(self.task_names, [round(w, 4) for w in weights.tolist()])),
            )

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        with_weights = split == "test" and self.edge_weights is not None
        out = self(batch, fusion_info=with_weights)
        labels = batch["labels"]
        losses, _ = self.task_losses(out["logits"], labels)
        self.log(f"{split}/loss", losses.sum(), on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.scores[split].update(out["logits"], labels, losses)
        if with_weights:
            self.edge_weights.update(out["fusion"])

    def evaluation_epoch_end(self, split: str) -> None:
        # compute() has already synchronised the states across ranks: every rank logs the same values
        self.log_dict({f"{split}/{key}": value for key, value in self.scores[split].compute().items()})
        if split == "test" and self.edge_weights is not None:
            spread = self.edge_weights.compute()
            self.log_dict({f"{split}/fusion/{key}": value for key, value in spread.items()})
            if self.trainer.is_global_zero:
                log_edge_weight_figure(self.trainer, self.edge_weights, split)

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
