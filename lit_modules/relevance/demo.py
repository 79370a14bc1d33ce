"""An image + caption classifier trained with relevance coefficients as per-sample loss weights.

Why a module here rather than an additive change to the hashtag classifier: the demonstration needs the
caption as an input too (the coefficients say how much a caption reveals its class), and
:class:`~lit_modules.relevance.module.RelevanceClassifier` already has what the weighting needs
(``batch["weight"]`` in :func:`~lit_modules.losses.weighted_classification_loss`, top-1/top-5 metrics);
only the network and its inputs differ. The network::

    v = CNN(image)            (pooled features)
    t = mean_t E[w_t]         (masked mean of the caption's word embeddings)
    z = W dropout([v, t]) + b
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lit_modules.relevance.module import RelevanceClassifier


class ImageCaptionNet(nn.Module):
    """Image encoder (``num_features``) + caption encoder (``forward(ids, mask)``) -> concat -> linear."""

    def __init__(
        self, image_encoder: nn.Module, text_encoder: nn.Module, num_classes: int, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(image_encoder.num_features + text_encoder.num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, image: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
        features = torch.cat([self.image_encoder(image), self.text_encoder(ids, mask)], dim=1)
        return self.classifier(self.dropout(features))


class CaptionedImageClassifier(RelevanceClassifier):
    """:class:`RelevanceClassifier` on images + captions (same loss, weights, metrics and logging)."""

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net(batch["image"], batch["ids"], batch["mask"])

    def export_metadata(self) -> dict[str, Any]:
        return {**super().export_metadata(), "kind": "captioned_image_classifier"}
