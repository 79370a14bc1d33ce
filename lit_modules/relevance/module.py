"""LightningModule of seed 000's relevance classifier (caption + class sentence -> class).

Training and evaluation of :class:`~lit_modules.relevance.networks.RelevanceNet` with sigmoid
outputs and one-hot BCE (the seed) or softmax + cross-entropy (``activation: softmax``). Batches
may carry per-sample loss weights (``batch["weight"]``, e.g. relevance coefficients):
:func:`lit_modules.losses.weighted_classification_loss`.

Logged: ``train/loss_step`` and ``train/loss_epoch``, ``<split>/loss``, ``<split>/top1``,
``<split>/top5`` (torchmetrics, DDP-synced). The filter's settings (``min_prob``, ``saturate_above``,
``shift``, ``normalize``) are not used in training; they travel with the export so
``experiments.score_relevance`` scores with the run's settings.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_modules.base import SuiteModule, check_choice, per_split
from lit_modules.losses import weighted_classification_loss
from lit_modules.relevance.networks import RelevanceNet
from lit_modules.relevance.rules import NORMALIZATIONS

ACTIVATIONS = {"sigmoid": "bce", "softmax": "ce"}


class RelevanceClassifier(SuiteModule):
    """Args:
    net: a :class:`RelevanceNet` (``self.net``; what the export writes).
    optimizer, scheduler: ``functools.partial`` objects (``conf/optimizer``, ``conf/scheduler``).
    activation: ``sigmoid`` (seed; BCE on one-hot targets) or ``softmax`` (CE).
    top_k: the k of the second accuracy (seed: top-5).
    min_prob, saturate_above, shift: the filter's thresholds (:mod:`lit_modules.relevance.rules`).
    normalize: rule 5's normalisation, ``rank`` or ``linear`` (:mod:`lit_modules.relevance.rules`).
    """

    def __init__(
        self,
        net: RelevanceNet,
        optimizer: Any = None,
        scheduler: Any = None,
        activation: str = "sigmoid",
        top_k: int = 5,
        min_prob: float = 0.5,
        saturate_above: float = 0.9,
        shift: float = 0.1,
        normalize: str = "rank",
        scheduler_interval: str = "epoch",
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        check_choice("activation", activation, sorted(ACTIVATIONS))
        check_choice("normalize", normalize, NORMALIZATIONS)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.loss_kind = ACTIVATIONS[activation]
        k = min(top_k, net.num_classes)

        # validate_args=False: labels come from the dataset; checks would sync host and device per step
        def accuracy(k: int) -> MulticlassAccuracy:
            return MulticlassAccuracy(net.num_classes, top_k=k, average="micro", validate_args=False)

        self.accuracy = per_split(lambda: nn.ModuleDict({"top1": accuracy(1), f"top{top_k}": accuracy(k)}))
        # The evaluation loss as a sample-weighted mean whose sums torchmetrics reduces over DDP ranks:
        # Lightning's sync_dist mean averages the ranks' sample counts in an integer tensor, which drops
        # half a sample whenever the total is odd (a loss off by up to 1/n).
        self.mean_loss = per_split(MeanMetric)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net(batch["ids"], batch["mask"])

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return weighted_classification_loss(logits, batch["labels"], batch.get("weight"), kind=self.loss_kind)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.loss(self(batch), batch)

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        logits = self(batch)
        self.mean_loss[split].update(self.loss(logits, batch), weight=len(batch["labels"]))
        for metric in self.accuracy[split].values():
            metric.update(logits, batch["labels"])

    def evaluation_epoch_end(self, split: str) -> None:
        self.log(f"{split}/loss", self.mean_loss[split].compute())
        for name, metric in self.accuracy[split].items():
            self.log(f"{split}/{name}", metric.compute(), prog_bar=name == "top1")

    def export_metadata(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "kind": "relevance",
            "activation": hp.activation,
            "filter": {"min_prob": hp.min_prob, "saturate_above": hp.saturate_above, "shift": hp.shift},
            "normalize": hp.normalize,
        }
