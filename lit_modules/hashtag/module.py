"""LightningModule of the hashtag scene classifier (seed 002).

Trains :class:`~lit_modules.hashtag.networks.HashtagNet` with cross-entropy over the hashtags +
``other`` (scene classes mapped by the data module). Validation logs ``val/loss``, ``val/acc`` and
``val/balanced_acc`` (mean per-class recall: the selection metric). Testing:

* ``test/acc``, ``test/balanced_acc`` and, with test-time augmentation (``tta_copies`` copies at
  the training strength ``k``, softmax averaged), ``test/tta/acc``, ``test/tta/balanced_acc``;
* abstaining: at test start :class:`~lit_modules.hashtag.calibration.AbstainThresholdCalibration`
  (a callback the module brings along, ``configure_callbacks``) scores the validation split once
  more (plain and TTA) and chooses the lowest confidence threshold reaching ``target_precision``
  there (``test/threshold``, ``test/val_precision``, ``test/val_coverage``); predictions of
  ``other`` or below it suggest nothing. Test precision and coverage at it: ``test/precision``,
  ``test/coverage`` (and ``test/tta/...``); the area under the risk-coverage curve ``test/aurc``;
* figures: the row-normalised confusion matrix with hashtag names and the risk-coverage curves.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_modules.base import SuiteModule, per_split
from lit_modules.hashtag.networks import INCEPTION_AUX_MIN_SIDE, HashtagNet, main_logits
from lit_modules.hashtag.tta import NormalizedAugment, tta_probabilities
from lit_modules.metrics.selective import (
    SelectivePredictions,
    area_under_risk_coverage,
    confusion_scores,
    risk_coverage,
    selective_scores,
)

AUX_WEIGHT = 0.4


class HashtagClassifier(SuiteModule):
    """Hashtag classifier with TTA and abstaining.

    Args:
        net: the network.
        optimizer, scheduler: ``functools.partial`` factories (``conf/optimizer``, ``conf/scheduler``).
        tta_copies: augmented copies per test image (seed: 8; 0 or 1: no TTA).
        tta_strength: augmentation strength of TTA; ``None``: the data's training strength ``k``.
        target_precision: precision the abstain threshold must reach on validation (e.g. 0.9).
        implausible_below: the inverse check flags a user hashtag whose probability is below this.
        other_label: name of the "no hashtag" class.
        label_names: the hashtags (from the data).
        image_pipeline: the data's image pipeline (from the data): what TTA augments with.
    """

    def __init__(
        self,
        net: HashtagNet,
        optimizer: Any,
        scheduler: Any = None,
        tta_copies: int = 8,
        tta_strength: float | None = None,
        target_precision: float = 0.9,
        implausible_below: float = 0.05,
        other_label: str = "other",
        scheduler_interval: str = "epoch",
        label_names: list[str] | None = None,
        image_pipeline: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        c = net.num_classes
        if label_names is not None and len(label_names) != c:
            raise ValueError(
                f"the data has {len(label_names)} hashtag classes {label_names} but the network "
                f"{c} outputs: set model.net.num_classes={len(label_names)}"
            )
        self.label_names: list[str] = list(label_names or [str(i) for i in range(c)])
        side = (image_pipeline or {}).get("crop")
        if net.has_aux_logits and side is not None and side < INCEPTION_AUX_MIN_SIDE:
            raise ValueError(
                f"Inception v3's auxiliary classifier needs inputs of at least {INCEPTION_AUX_MIN_SIDE} px, "
                f"the data gives {side} px: set model.net.aux_logits=false (the seed's 256 px) or "
                f"augmentation.resize={INCEPTION_AUX_MIN_SIDE} augmentation.crop={INCEPTION_AUX_MIN_SIDE}"
            )
        evaluated = ("val", "test", "test_tta")
        self.confusion = per_split(lambda: MulticlassConfusionMatrix(c), splits=evaluated)
        self.selective = per_split(SelectivePredictions, splits=evaluated)
        self.register_buffer("threshold", torch.tensor(math.inf))
        self.register_buffer("threshold_tta", torch.tensor(math.inf))
        self.val_choice: dict[str, dict[str, float]] = {}
        self.tta_augment = self._build_tta_augment()
        self._curves: dict[str, dict[str, Tensor]] = {}

    def configure_callbacks(self) -> list:
        from lit_modules.hashtag.calibration import AbstainThresholdCalibration

        return [AbstainThresholdCalibration()]

    @property
    def other_index(self) -> int | None:
        other = self.hparams.other_label
        return self.label_names.index(other) if other in self.label_names else None

    def _build_tta_augment(self) -> NormalizedAugment | None:
        pipeline = self.hparams.image_pipeline or {}
        k = self.hparams.tta_strength if self.hparams.tta_strength is not None else pipeline.get("k", 0.0)
        if not pipeline or not k or self.hparams.tta_copies <= 1:
            return None
        return NormalizedAugment(k, pipeline["crop"], pipeline["mean"], pipeline["std"])

    # ----------------------------------------------------------------------------- steps
    def forward(self, images: Tensor) -> Tensor:
        return main_logits(self.net(images))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.net(batch["image"])
        target = batch["label"]
        if isinstance(out, tuple):  # Inception v3: main + auxiliary logits
            return F.cross_entropy(out[0], target) + AUX_WEIGHT * F.cross_entropy(out[1], target)
        return F.cross_entropy(out, target)

    def tta_probabilities(self, images: Tensor) -> Tensor:
        """Softmax averaged over the TTA copies (the plain softmax without TTA)."""
        return tta_probabilities(self, images, self.tta_augment, self.hparams.tta_copies)

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> None:
        images, target = batch["image"], batch["label"]
        logits = self(images)
        loss = F.cross_entropy(logits, target)
        self.log(f"{split}/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(target))
        probs = logits.softmax(1)
        self.confusion[split].update(probs.argmax(1), target)
        if split == "test":
            self.selective["test"].update(probs, target)
            tta = self.tta_probabilities(images) if self.tta_augment is not None else probs
            self.confusion["test_tta"].update(tta.argmax(1), target)
            self.selective["test_tta"].update(tta, target)

    def selective_state(self, name: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(confidence, correct, eligible)`` of the predictions collected in ``selective[name]``
        (``eligible``: not ``other``, which never suggests a hashtag)."""
        state = self.selective[name].compute()
        correct = state["prediction"] == state["target"]
        eligible = state["prediction"] != self.other_index if self.other_index is not None else None
        return state["confidence"], correct, eligible

    def evaluation_epoch_end(self, split: str) -> None:
        if split == "val":
            scores = confusion_scores(self.confusion["val"].compute())
            self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=True)
            return
        out: dict[str, float] = {}
        confusion = {}
        for name, prefix, threshold in (
            ("test", "test/", self.threshold),
            ("test_tta", "test/tta/", self.threshold_tta),
        ):
            confusion[name] = self.confusion[name].compute()
            out.update({prefix + k: float(v) for k, v in confusion_scores(confusion[name]).items()})
            confidence, correct, eligible = self.selective_state(name)
            sel = selective_scores(confidence, correct, float(threshold), eligible)
            out[prefix + "threshold"] = min(float(threshold), 1.0 + 1e-6)  # +inf (never suggest) shown as > 1
            out[prefix + "precision"], out[prefix + "coverage"] = sel["precision"], sel["coverage"]
            self._curves[name] = risk_coverage(confidence, correct, eligible)
            out[prefix + "aurc"] = area_under_risk_coverage(self._curves[name])
        for name, prefix in (("plain", "test/"), ("tta", "test/tta/")):
            if name in self.val_choice:
                out[prefix + "val_precision"] = self.val_choice[name]["precision"]
                out[prefix + "val_coverage"] = self.val_choice[name]["coverage"]
        self.log_dict(out)
        if self.trainer.is_global_zero:
            self._log_figures(confusion["test"], confusion["test_tta"])

    # ----------------------------------------------------------------------------- figures
    def _log_figures(self, confusion: Tensor, confusion_tta: Tensor) -> None:
        from lit_modules.figures import confusion_figure, log_figure, risk_coverage_figure

        folder = Path(self.trainer.default_root_dir) / "figures"
        for matrix, title, name in (
            (confusion, "test confusion (no TTA)", "confusion_matrix"),
            (confusion_tta, "test confusion (TTA)", "confusion_matrix_tta"),
        ):
            fig = confusion_figure(matrix, self.label_names, title)
            log_figure(self.trainer, fig, folder / f"{name}.png", key=f"test/{name}")
        fig = risk_coverage_figure(
            self._curves, float(self.threshold), float(self.threshold_tta), self.hparams.target_precision
        )
        log_figure(self.trainer, fig, folder / "risk_coverage.png", key="test/risk_coverage")

    # ----------------------------------------------------------------------------- export
    def export_metadata(self) -> dict[str, Any]:
        def finite(x: Tensor) -> float | None:
            return float(x) if torch.isfinite(x) else None  # None: never suggest

        return {
            "kind": "hashtag_classifier",
            "label_names": self.label_names,
            "other": self.hparams.other_label,
            "threshold": finite(self.threshold),
            "threshold_tta": finite(self.threshold_tta),
            "target_precision": self.hparams.target_precision,
            "tta_copies": self.hparams.tta_copies,
            "tta_strength": self.hparams.tta_strength,
            "implausible_below": self.hparams.implausible_below,
        }
