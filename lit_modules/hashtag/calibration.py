"""Choosing the hashtag classifier's abstain thresholds on the validation split (seed 002).

A step of its own, run by :class:`AbstainThresholdCalibration` at the start of every test (after
fit, or in ``experiments.evaluate``): the test's weights score the validation split once more,
plain and with test-time augmentation, and each threshold is the lowest confidence whose
suggestions reach ``target_precision`` there (:func:`~lit_modules.metrics.selective.threshold_for_precision`).
"""

from __future__ import annotations

import logging

import torch
from lightning import Callback, LightningModule, Trainer

from lit_modules.metrics.selective import threshold_for_precision

log = logging.getLogger(__name__)


class AbstainThresholdCalibration(Callback):
    """Sets ``threshold`` / ``threshold_tta`` of a :class:`~lit_modules.hashtag.HashtagClassifier`
    (and its ``val_choice``: the precision and coverage reached on validation) before testing."""

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or datamodule.data_val is None or len(datamodule.data_val) == 0:
            log.warning("no validation data: the abstain threshold stays at +inf (never suggest)")
            return
        module = pl_module
        with torch.no_grad():
            for batch in datamodule.val_dataloader():
                images, target = batch["image"].to(module.device), batch["label"].to(module.device)
                module.selective["val"].update(module(images).softmax(1), target)
                if module.tta_augment is not None:
                    module.selective["test_tta"].update(module.tta_probabilities(images), target)
        plain = self._choose(module, "val")
        tta = self._choose(module, "test_tta") if module.tta_augment is not None else plain
        module.threshold.fill_(plain["threshold"])
        module.threshold_tta.fill_(tta["threshold"])
        module.selective["val"].reset()
        module.selective["test_tta"].reset()
        module.val_choice = {"plain": plain, "tta": tta}

    @staticmethod
    def _choose(module: LightningModule, name: str) -> dict[str, float]:
        confidence, correct, eligible = module.selective_state(name)
        return threshold_for_precision(confidence, correct, module.hparams.target_precision, eligible)
