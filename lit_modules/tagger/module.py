"""LightningModule of the multi-label image tagger: one module, trained in stages.

The seed trains its four parts separately: the image CNN and the tag MLP on the labels
(BCEWithLogits, eq. 3.1), then the linear fusion (BCEWithLogits) and the label-count regressor
(MSE on the normalised count, eq. 3.2) on top of the frozen first two. ``stage`` selects the part
that this run trains; every other part is frozen (no gradients, eval mode). Stages are chained by
:mod:`experiments.stages`, each starting from the previous stage's best checkpoint, so the last
checkpoint holds the whole composite model. A fifth part, the count regressor on the image
probabilities alone (``image_label_count``), is trained only for the seed's Table 5.1, whose rows
are prediction rules over one trained set of parts.

Evaluation scores every prediction rule whose parts are trained (the rows of the seed's Table 5.1):

==================  =====================================  ==========================
rule                labels of an image                     needs
==================  =====================================  ==========================
``image_topk``      top-k of the image CNN (k = 3)         image_cnn
``tags_topk``       top-k of the tag MLP                   tag_mlp
``fusion_topk``     top-k of the fusion                    image_cnn, tag_mlp, fusion
``image_count``     top-(predicted count) of the image CNN image_cnn, image_label_count (count on vf)
``composite``       top-(predicted count) of the fusion    image_cnn, tag_mlp, fusion, label_count
``<out>_threshold`` ``p > alpha`` on image / tags / fusion as their top-k rules (``alpha: null``: off)
==================  =====================================  ==========================

Metrics are logged as ``<split>/<rule>/<CP|CR|CF1|OP|OR|OF1|HF1>``, mean average precision per
output as ``<split>/<output>/mAP``, and the stage's own rule again without prefix
(``<split>/HF1`` ...: the checkpoint monitor and the columns of sweep reports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.preprocessing.images import training_images_vary
from lit_modules.base import SuiteModule, check_choice, per_split
from lit_modules.metrics import MultilabelAnnotationMetrics, MultilabelMeanAveragePrecision
from lit_modules.prediction_rules import counts_to_k, threshold_labels, top_k_labels
from lit_modules.tagger.networks import PARTS, TaggerNet


@dataclass(frozen=True)
class PredictionRule:
    scores: str  # key of TaggerNet's output holding the label logits
    kind: str  # "topk": fixed top_k; "count": k from a label-count regressor; "threshold": p > alpha
    needs: tuple[str, ...]
    count: str | None = None  # key of TaggerNet's output holding the predicted count ("count" rules)


_FUSION = ("image_cnn", "tag_mlp", "fusion")
RULES: dict[str, PredictionRule] = {
    "image_topk": PredictionRule("image_logits", "topk", ("image_cnn",)),
    "tags_topk": PredictionRule("tag_logits", "topk", ("tag_mlp",)),
    "fusion_topk": PredictionRule("fusion_logits", "topk", _FUSION),
    "image_count": PredictionRule("image_logits", "count", ("image_cnn", "image_label_count"), "image_count"),
    "composite": PredictionRule("fusion_logits", "count", (*_FUSION, "label_count"), "count"),
    "image_threshold": PredictionRule("image_logits", "threshold", ("image_cnn",)),
    "tags_threshold": PredictionRule("tag_logits", "threshold", ("tag_mlp",)),
    "fusion_threshold": PredictionRule("fusion_logits", "threshold", _FUSION),
}


def apply_rule(
    out: dict[str, Tensor],
    rule: str,
    top_k: int = 3,
    min_k: int = 1,
    alpha: float = 0.5,
    count_rounding: str = "half_even",
) -> Tensor:
    """0/1 labels ``[n, C]`` from :class:`TaggerNet` outputs by the prediction rule ``rule``."""
    spec = RULES[rule]
    scores = out[spec.scores]
    if spec.kind == "threshold":
        return threshold_labels(scores.sigmoid(), alpha)
    if spec.kind == "count":
        k = counts_to_k(out[spec.count], min_k=min_k, max_k=scores.shape[1], rounding=count_rounding)
        return top_k_labels(scores, k)
    return top_k_labels(scores, top_k)


#: The rule each stage is selected and monitored by (``val/HF1`` ...).
STAGE_RULE = {
    "image_cnn": "image_topk",
    "tag_mlp": "tags_topk",
    "fusion": "fusion_topk",
    "label_count": "composite",
    "image_label_count": "image_count",
}
#: The outputs scored by mean average precision: the logits and parts of each output's top-k rule.
OUTPUTS = {name: RULES[f"{name}_topk"] for name in ("image", "tags", "fusion")}


class ItemOutputCache:
    """Outputs of a frozen network per dataset item, computed the first time an item is seen.

    A frozen image CNN in eval mode maps one item's image to the same logits every epoch (unless
    training-time augmentation changes the image): the stages after ``image_cnn`` would otherwise
    run it over every image in every epoch, most of their compute (a ResNeXt-101 on the real data).
    Rows are dataset indices; the table grows to the largest index seen (81 floats an item).
    """

    def __init__(self) -> None:
        self.values: Tensor | None = None
        self.known: Tensor | None = None

    def __call__(self, index: Tensor, compute: Any) -> Tensor:
        """Rows ``index``; ``compute(mask)`` gives the outputs of the batch items under ``mask``."""
        size = int(index.max()) + 1
        if self.known is None or size > len(self.known):
            known = torch.zeros(size, dtype=torch.bool, device=index.device)
            if self.known is not None:
                known[: len(self.known)] = self.known
            self.known = known
        missing = ~self.known[index]
        if missing.any():
            computed = compute(missing)
            if self.values is None or len(self.values) < size:
                values = computed.new_zeros(size, *computed.shape[1:])
                if self.values is not None:
                    values[: len(self.values)] = self.values
                self.values = values
            self.values[index[missing]] = computed
            self.known[index[missing]] = True
        return self.values[index]


class MultiLabelTagger(SuiteModule):
    """Staged training and rule-wise evaluation of :class:`~lit_modules.tagger.networks.TaggerNet`.

    Args:
        net: the composite network.
        optimizer: a ``functools.partial`` of a torch optimizer (``conf/optimizer``).
        scheduler: a ``functools.partial`` of an LR scheduler, or ``None`` (``conf/scheduler``).
        stage: the part trained by this run: one of :data:`~lit_modules.tagger.networks.PARTS`.
        top_k: k of the fixed top-k rules (seed: 3).
        min_k: lower bound of the count rules' per-image k (seed: at least one label).
        count_rounding: how a predicted count becomes k (:data:`~lit_modules.prediction_rules.ROUNDINGS`;
            the seed does not say; ``half_even`` is ``torch.round``).
        alpha: threshold of the ``*_threshold`` rules; ``None`` leaves them out.
        num_figure_examples: test images drawn in the examples figure.
        label_names: the concepts (from the data: figures).
        image_pipeline: the data's image pipeline (from the data: figures undo its normalisation;
            whether training images are augmented).
        cache_frozen_image_logits: in the stages after ``image_cnn``, compute the frozen CNN's
            logits once per item (:class:`ItemOutputCache`); training items only when training
            images are not augmented (``image_pipeline``). Off: the CNN runs on every batch.
    """

    def __init__(
        self,
        net: TaggerNet,
        optimizer: Any,
        scheduler: Any = None,
        stage: str = "image_cnn",
        top_k: int = 3,
        min_k: int = 1,
        count_rounding: str = "half_even",
        alpha: float | None = 0.5,
        num_figure_examples: int = 12,
        scheduler_interval: str = "epoch",
        label_names: list[str] | None = None,
        image_pipeline: dict[str, Any] | None = None,
        cache_frozen_image_logits: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        check_choice("stage", stage, PARTS)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        for part in PARTS:
            getattr(net, part).requires_grad_(part == stage)
        # One metric set per rule and split; which rules are scored depends on which parts are
        # trained (net.trained), known only once weights are loaded: see _refresh_active().
        # validate_args=False: the inputs are built here (thresholded outputs, 0/1 labels), and the
        # value checks would cost a host-device synchronisation per update on a GPU.
        self.metrics = per_split(
            lambda: MultilabelAnnotationMetrics(net.num_labels, validate_args=False), RULES
        )
        self.average_precision = per_split(
            lambda: MultilabelMeanAveragePrecision(net.num_labels, validate_args=False), OUTPUTS
        )
        self.selection_rule = STAGE_RULE[stage]
        self.rules: list[str] = []
        self.outputs: list[str] = []
        self._figure_batch: dict[str, Tensor] | None = None
        self._image_logit_caches: dict[str, ItemOutputCache] = {}

    # ----------------------------------------------------------------------------- what is trained
    def _available(self, needs: tuple[str, ...]) -> bool:
        return all(p == self.hparams.stage or self.net.is_trained(p) for p in needs)

    def _rule_available(self, rule: PredictionRule) -> bool:
        if rule.kind == "threshold" and self.hparams.alpha is None:
            return False
        return self._available(rule.needs)

    def _refresh_active(self) -> None:
        self.rules = [name for name, rule in RULES.items() if self._rule_available(rule)]
        self.outputs = [name for name, rule in OUTPUTS.items() if self._available(rule.needs)]

    def train(self, mode: bool = True) -> MultiLabelTagger:
        """Frozen parts stay in eval mode (batch-norm statistics and dropout fixed) in every stage."""
        super().train(mode)
        for part in PARTS:
            if part != self.hparams.stage:
                getattr(self.net, part).eval()
        return self

    def on_fit_start(self) -> None:
        self.net.mark_trained(self.hparams.stage)

    # ----------------------------------------------------------------------------- steps
    def forward(self, image: Tensor, tags: Tensor) -> dict[str, Tensor]:
        return self.net(image, tags)

    def _image_logits(self, batch: dict[str, Tensor], split: str) -> Tensor:
        """The image CNN's logits of a batch: from the split's cache while the CNN is frozen and the
        split's images are the same every epoch (see ``cache_frozen_image_logits``)."""
        pipeline = self.hparams.image_pipeline  # unknown (None): treat training images as augmented
        same_every_epoch = split != "train" or (pipeline is not None and not training_images_vary(pipeline))
        cached = (
            self.hparams.cache_frozen_image_logits
            and self.hparams.stage != "image_cnn"
            and "index" in batch
            and same_every_epoch
        )
        if not cached:
            return self.net.image_logits(batch["image"])
        cache = self._image_logit_caches.setdefault(split, ItemOutputCache())
        return cache(batch["index"], lambda rows: self.net.image_logits(batch["image"][rows]))

    def _outputs(self, batch: dict[str, Tensor], split: str) -> dict[str, Tensor]:
        """:meth:`forward` on a batch, the frozen CNN's logits possibly cached."""
        return self.net.from_image_logits(self._image_logits(batch, split), batch["tags"])

    def _loss(self, out: dict[str, Tensor], labels: Tensor) -> Tensor:
        """BCEWithLogits on the stage's logits (eq. 3.1), or MSE on its normalised count (eq. 3.2)."""
        rule = RULES[self.selection_rule]
        if rule.kind == "count":  # the stage's count regressor; ``<count>_norm``: its normalised output
            target = labels.sum(dim=1) / self.net.count_scale
            return F.mse_loss(out[f"{rule.count}_norm"], target)
        return F.binary_cross_entropy_with_logits(out[rule.scores], labels)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        stage, labels = self.hparams.stage, batch["labels"]
        # Stages that need one branch only skip the other (frozen) one.
        if stage == "image_cnn":
            out = {"image_logits": self.net.image_logits(batch["image"])}
        elif stage == "tag_mlp":
            out = {"tag_logits": self.net.tag_mlp(batch["tags"])}
        elif stage == "image_label_count":
            out = self.net.image_counts(self._image_logits(batch, "train"))
        else:
            out = self._outputs(batch, "train")
        return self._loss(out, labels)

    def predict_labels(self, out: dict[str, Tensor], rule: str) -> Tensor:
        """0/1 labels ``[n, C]`` of one prediction rule."""
        return apply_rule(
            out,
            rule,
            top_k=self.hparams.top_k,
            min_k=self.hparams.min_k,
            alpha=self.hparams.alpha if self.hparams.alpha is not None else 0.5,
            count_rounding=self.hparams.count_rounding,
        )

    def evaluation_epoch_start(self, split: str) -> None:
        self._refresh_active()

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        out = self._outputs(batch, split)
        labels = batch["labels"]
        self.log(
            f"{split}/loss", self._loss(out, labels), on_epoch=True, sync_dist=True, batch_size=len(labels)
        )
        count = RULES[self.selection_rule].count
        if count is not None:
            mae = (out[count] - labels.sum(dim=1)).abs().mean()
            self.log(f"{split}/count_mae", mae, on_epoch=True, sync_dist=True, batch_size=len(labels))
        target = labels.long()
        for rule in self.rules:
            self.metrics[split][rule].update(self.predict_labels(out, rule), target)
        for name in self.outputs:
            self.average_precision[split][name].update(out[OUTPUTS[name].scores].sigmoid(), target)
        if split == "test" and self._figure_batch is None:
            self._figure_batch = {
                "image": batch["image"].cpu(),
                "labels": target.cpu(),
                "pred": self.predict_labels(out, self.selection_rule).cpu(),
            }

    def evaluation_epoch_end(self, split: str) -> None:
        for rule in self.rules:
            scores = self.metrics[split][rule].compute()
            self.log_dict({f"{split}/{rule}/{k}": v for k, v in scores.items()})
            # the stage's own rule, without prefix: monitor and report columns
            if rule == self.selection_rule:
                self.log_dict({f"{split}/{k}": v for k, v in scores.items()})
        for name in self.outputs:
            self.log(f"{split}/{name}/mAP", self.average_precision[split][name].compute())

        if split == "test" and self._figure_batch is not None and self.trainer.is_global_zero:
            self._log_examples_figure(self._figure_batch)
        self._figure_batch = None

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        out = self(batch["image"], batch["tags"])
        return {
            "probs": out["fusion_logits"].sigmoid(),
            "count": out["count"],
            "labels": self.predict_labels(out, self.selection_rule),
        }

    # ----------------------------------------------------------------------------- figure
    def _log_examples_figure(self, batch: dict[str, Tensor]) -> None:
        """The seed's example table: image, true labels, predicted labels; saved and sent to loggers."""
        from lit_modules.figures import log_figure, tagged_examples_figure

        names = self.hparams.label_names or [str(i) for i in range(self.net.num_labels)]
        n = min(self.hparams.num_figure_examples, len(batch["image"]))
        fig = tagged_examples_figure(
            batch["image"][:n],
            batch["labels"][:n],
            batch["pred"][:n],
            names,
            self.hparams.image_pipeline,
            title=f"{self.hparams.stage}: {self.selection_rule}",
        )
        path = Path(self.trainer.default_root_dir) / "figures" / f"examples_{self.hparams.stage}.png"
        log_figure(self.trainer, fig, path, key=f"test/examples_{self.hparams.stage}")

    # ----------------------------------------------------------------------------- export
    def export_metadata(self) -> dict[str, Any]:
        """Prediction settings written next to the exported weights (see experiments/predict.py)."""
        return {
            "kind": "multilabel_tagger",
            "rule": self.selection_rule,
            "top_k": self.hparams.top_k,
            "min_k": self.hparams.min_k,
            "count_rounding": self.hparams.count_rounding,
            "alpha": self.hparams.alpha,
            "trained_parts": [p for p in PARTS if self.net.is_trained(p)],
        }
