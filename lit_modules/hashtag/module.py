"""LightningModule of the hashtag scene classifier (seed 002).

Trains :class:`~lit_modules.hashtag.networks.HashtagNet` with cross-entropy over the hashtags +
``other`` (scene classes mapped by the data module). Validation logs ``val/loss``, ``val/acc`` and
``val/balanced_acc`` (mean per-class recall: the selection metric). Testing:

* ``test/acc``, ``test/balanced_acc`` and, with test-time augmentation (``tta_copies`` copies at
  the training strength ``k``, softmax averaged), ``test/tta/acc``, ``test/tta/balanced_acc``;
* abstaining: at test start the validation split is scored once more (plain and TTA) and the
  lowest confidence threshold reaching ``target_precision`` there is chosen
  (``test/threshold``, ``test/val_precision``, ``test/val_coverage``); predictions of ``other`` or
  below it suggest nothing. Test precision and coverage at it: ``test/precision``,
  ``test/coverage`` (and ``test/tta/...``); the area under the risk-coverage curve ``test/aurc``;
* figures: the row-normalised confusion matrix with hashtag names and the risk-coverage curves.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from lit_modules.base import SuiteModule
from lit_modules.hashtag.networks import HashtagNet
from lit_modules.hashtag.tta import NormalizedAugment, tta_probabilities
from lit_modules.metrics.selective import (
    SelectivePredictions,
    confusion_scores,
    risk_coverage,
    row_normalize,
    selective_scores,
    threshold_for_precision,
)

log = logging.getLogger(__name__)
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
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = net
        c = net.num_classes
        self.confusion = nn.ModuleDict(
            {name: MulticlassConfusionMatrix(c) for name in ("val", "test", "test_tta")}
        )
        self.selective = nn.ModuleDict({name: SelectivePredictions() for name in ("val", "test", "test_tta")})
        self.register_buffer("threshold", torch.tensor(math.inf))
        self.register_buffer("threshold_tta", torch.tensor(math.inf))
        self.label_names: list[str] = [str(i) for i in range(c)]
        self._augment = None
        self._curves: dict[str, dict[str, Tensor]] = {}

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "label_names", None)
        if names:
            if len(names) != self.net.num_classes:
                raise ValueError(
                    f"the data has {len(names)} hashtag classes {names} but the network "
                    f"{self.net.num_classes} outputs: set model.net.num_classes={len(names)}"
                )
            self.label_names = list(names)

    @property
    def other_index(self) -> int | None:
        other = self.hparams.other_label
        return self.label_names.index(other) if other in self.label_names else None

    def _tta_augment(self):
        if self._augment is not None:
            return self._augment
        datamodule = getattr(self.trainer, "datamodule", None)
        transforms = getattr(datamodule, "transforms", None)
        k = self.hparams.tta_strength
        if k is None:
            k = getattr(transforms, "k", 0.0)
        if transforms is None or not k or self.hparams.tta_copies <= 1:
            return None
        self._augment = NormalizedAugment(k, transforms.crop, transforms.mean, transforms.std)
        return self._augment

    # ----------------------------------------------------------------------------- steps
    def forward(self, images: Tensor) -> Tensor:
        out = self.net(images)
        return out[0] if isinstance(out, tuple) else out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.net(batch["image"])
        target = batch["label"]
        if isinstance(out, tuple):  # Inception v3: main + auxiliary logits
            loss = F.cross_entropy(out[0], target) + AUX_WEIGHT * F.cross_entropy(out[1], target)
        else:
            loss = F.cross_entropy(out, target)
        self.log_train_loss(loss, batch_size=len(target))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch["image"])
        target = batch["label"]
        self.log(
            "val/loss", F.cross_entropy(logits, target), on_epoch=True, sync_dist=True, batch_size=len(target)
        )
        self.confusion["val"].update(logits.argmax(1), target)

    def on_validation_epoch_end(self) -> None:
        scores = confusion_scores(self.confusion["val"].compute())
        self.confusion["val"].reset()
        self.log_dict({f"val/{k}": v for k, v in scores.items()}, prog_bar=True)

    # ----------------------------------------------------------------------------- test
    def on_test_epoch_start(self) -> None:
        """Choose the abstain thresholds on the validation split (plain and TTA) for these weights."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if (
            datamodule is None
            or getattr(datamodule, "data_val", None) is None
            or len(datamodule.data_val) == 0
        ):
            log.warning("no validation data: the abstain threshold stays at +inf (never suggest)")
            return
        augment = self._tta_augment()
        for batch in datamodule.val_dataloader():
            images, target = batch["image"].to(self.device), batch["label"].to(self.device)
            self.selective["val"].update(self(images).softmax(1), target)
            if augment is not None:
                self.selective["test_tta"].update(
                    tta_probabilities(self, images, augment, self.hparams.tta_copies), target
                )
        plain = self._choose_threshold(self.selective["val"])
        self.threshold.fill_(plain["threshold"])
        tta = self._choose_threshold(self.selective["test_tta"]) if augment is not None else plain
        self.threshold_tta.fill_(tta["threshold"])
        self.selective["val"].reset()
        self.selective["test_tta"].reset()
        self._val_choice = {"plain": plain, "tta": tta}

    def _choose_threshold(self, metric: SelectivePredictions) -> dict[str, float]:
        state = metric.compute()
        correct = state["prediction"] == state["target"]
        eligible = state["prediction"] != self.other_index if self.other_index is not None else None
        return threshold_for_precision(state["confidence"], correct, self.hparams.target_precision, eligible)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        images, target = batch["image"], batch["label"]
        logits = self(images)
        self.log(
            "test/loss",
            F.cross_entropy(logits, target),
            on_epoch=True,
            sync_dist=True,
            batch_size=len(target),
        )
        probs = logits.softmax(1)
        self.confusion["test"].update(probs.argmax(1), target)
        self.selective["test"].update(probs, target)
        augment = self._tta_augment()
        tta = (
            tta_probabilities(self, images, augment, self.hparams.tta_copies)
            if augment is not None
            else probs
        )
        self.confusion["test_tta"].update(tta.argmax(1), target)
        self.selective["test_tta"].update(tta, target)

    def on_test_epoch_end(self) -> None:
        out: dict[str, float] = {}
        confusion = {}
        for name, prefix, threshold in (
            ("test", "test/", self.threshold),
            ("test_tta", "test/tta/", self.threshold_tta),
        ):
            confusion[name] = self.confusion[name].compute()
            out.update({prefix + k: float(v) for k, v in confusion_scores(confusion[name]).items()})
            state = self.selective[name].compute()
            correct = state["prediction"] == state["target"]
            eligible = state["prediction"] != self.other_index if self.other_index is not None else None
            sel = selective_scores(state["confidence"], correct, float(threshold), eligible)
            out[prefix + "threshold"] = min(float(threshold), 1.0 + 1e-6)  # +inf (never suggest) shown as > 1
            out[prefix + "precision"], out[prefix + "coverage"] = sel["precision"], sel["coverage"]
            curve = risk_coverage(state["confidence"], correct, eligible)
            self._curves[name] = curve
            out[prefix + "aurc"] = _area_under_risk_coverage(curve)
            self.confusion[name].reset()
            self.selective[name].reset()
        choice = getattr(self, "_val_choice", None)
        if choice:
            out.update(
                {
                    "test/val_precision": choice["plain"]["precision"],
                    "test/val_coverage": choice["plain"]["coverage"],
                    "test/tta/val_precision": choice["tta"]["precision"],
                    "test/tta/val_coverage": choice["tta"]["coverage"],
                }
            )
        self.log_dict(out)
        if self.trainer.is_global_zero:
            self._log_figures(confusion["test"], confusion["test_tta"])

    # ----------------------------------------------------------------------------- figures
    def _log_figures(self, confusion: Tensor, confusion_tta: Tensor) -> None:
        from lit_modules.figures import log_figure

        folder = Path(self.trainer.default_root_dir) / "figures"
        log_figure(
            self.trainer,
            confusion_figure(confusion.cpu(), self.label_names, "test confusion (no TTA)"),
            folder / "confusion_matrix.png",
            key="test/confusion_matrix",
        )
        log_figure(
            self.trainer,
            confusion_figure(confusion_tta.cpu(), self.label_names, "test confusion (TTA)"),
            folder / "confusion_matrix_tta.png",
            key="test/confusion_matrix_tta",
        )
        log_figure(
            self.trainer,
            risk_coverage_figure(
                self._curves, float(self.threshold), float(self.threshold_tta), self.hparams.target_precision
            ),
            folder / "risk_coverage.png",
            key="test/risk_coverage",
        )

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


def _area_under_risk_coverage(curve: dict[str, Tensor]) -> float:
    """Area under the risk-coverage curve (step-wise, from coverage 0; lower is better)."""
    if curve["coverage"].numel() == 0:
        return 0.0
    cov = torch.cat([curve["coverage"].new_zeros(1), curve["coverage"]])
    return float(((cov[1:] - cov[:-1]) * curve["risk"]).sum())


def confusion_figure(confusion: Tensor, names: list[str], title: str):
    """Row-normalised confusion matrix (rows: true hashtag, columns: predicted) with hashtag names;
    hashtags that neither occur nor are predicted are left out."""
    import matplotlib.pyplot as plt

    keep = ((confusion.sum(0) + confusion.sum(1)) > 0).nonzero().flatten().tolist() or list(range(len(names)))
    norm = row_normalize(confusion[keep][:, keep]).numpy()
    labels = [names[i] for i in keep]
    size = max(4.0, 0.45 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(keep)), labels, rotation=70, ha="right", fontsize=8)
    ax.set_yticks(range(len(keep)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(keep)):
        for j in range(len(keep)):
            if norm[i, j] >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def risk_coverage_figure(
    curves: dict[str, dict[str, Tensor]], threshold: float, threshold_tta: float, target: float
):
    """Risk (1 - precision of the suggestions) against coverage, plain and TTA, with the chosen points."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, label, t in (("test", "no TTA", threshold), ("test_tta", "TTA", threshold_tta)):
        curve = curves.get(name)
        if curve is None or curve["coverage"].numel() == 0:
            continue
        (line,) = ax.plot(curve["coverage"].numpy(), curve["risk"].numpy(), label=label)
        chosen = (curve["threshold"] >= t).nonzero().flatten()
        if chosen.numel():
            i = int(chosen[-1])
            ax.plot([float(curve["coverage"][i])], [float(curve["risk"][i])], "o", color=line.get_color())
    ax.axhline(1 - target, ls="--", color="grey", lw=0.8, label=f"target risk {1 - target:.2f}")
    ax.set_xlabel("coverage (share of test images given a hashtag)")
    ax.set_ylabel("risk (1 - precision)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("risk-coverage (dots: thresholds chosen on validation)")
    fig.tight_layout()
    return fig
