"""The four parts of the multi-label image tagger (seed 001, NUS-WIDE), each its own ``nn.Module``.

Notation of the seed (C = 81 concepts, N = 1000 tags)::

    vf = sigma(VCNN(I))             image branch: a CNN over pixels, C logits
    tf = sigma(MLP(t)),  t in {0,1}^N   tag branch: an MLP over the binary user-tag vector
    v  = [vf, tf]                    the concatenated probability vector, 2C
    LP(v)  = W v + b                 linear fusion ("label predictor"), C logits
    LQP(v) = MLP_drop0.5(v)          label-count regressor ("label quantity predictor"), trained
                                     with MSE on the normalised count  y / count_scale (eq. 3.2)
    LQP_v(vf)                        the same regressor on the image probabilities alone: the
                                     "VCNN + LQP, top k, image" row of the seed's Table 5.1

The composite prediction takes the top ``k = max(1, round(count_scale * LQP(v)))`` labels of LP(v)
(the rounding: :data:`lit_modules.prediction_rules.ROUNDINGS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Trainable parts, in training order; ``image_label_count`` (LQP_v) serves the ablation row only.
PARTS: tuple[str, ...] = ("image_cnn", "tag_mlp", "fusion", "label_count", "image_label_count")


def mlp(in_features: int, hidden: Sequence[int], out_features: int, dropout: float) -> nn.Sequential:
    """``Linear -> ReLU -> Dropout`` for every hidden size, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class TagMLP(nn.Module):
    """Binary tag vector ``t`` -> C label logits."""

    def __init__(self, num_tags: int, num_labels: int, hidden: Sequence[int] = (512,), dropout: float = 0.5):
        super().__init__()
        self.layers = mlp(num_tags, hidden, num_labels, dropout)

    def forward(self, tags: Tensor) -> Tensor:
        return self.layers(tags)


class LateFusion(nn.Module):
    """LP: one linear layer on the concatenated probabilities ``v = [vf, tf]`` -> C logits."""

    def __init__(self, num_labels: int, num_sources: int = 2):
        super().__init__()
        self.linear = nn.Linear(num_sources * num_labels, num_labels)

    def forward(self, probs: Tensor) -> Tensor:
        return self.linear(probs)


class LabelCountRegressor(nn.Module):
    """LQP: an MLP with dropout 0.5 on the probability vector -> one real number, the label count
    divided by ``count_scale`` (the seed normalises the count target for faster convergence)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (256,), dropout: float = 0.5):
        super().__init__()
        self.layers = mlp(in_features, hidden, 1, dropout)

    def forward(self, probs: Tensor) -> Tensor:
        return self.layers(probs).squeeze(-1)


class TaggerNet(nn.Module):
    """The composite tagger: image CNN + tag MLP + linear fusion + label-count regressor, and the
    image-only count regressor of the seed's "VCNN + LQP" row.

    Args:
        image_cnn: any image classifier with ``num_labels`` outputs (see :mod:`lit_modules.backbones`).
        num_labels: C.
        num_tags: N, the size of the binary tag vector.
        tag_hidden, tag_dropout: the tag MLP's hidden sizes and dropout.
        count_hidden, count_dropout: both count regressors' hidden sizes and dropout (seed: 0.5).
        count_scale: the count target is ``y / count_scale``.
    """

    def __init__(
        self,
        image_cnn: nn.Module,
        num_labels: int = 81,
        num_tags: int = 1000,
        tag_hidden: Sequence[int] = (512,),
        tag_dropout: float = 0.5,
        count_hidden: Sequence[int] = (256,),
        count_dropout: float = 0.5,
        count_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.count_scale = float(count_scale)
        self.image_cnn = image_cnn
        self.tag_mlp = TagMLP(num_tags, num_labels, tag_hidden, tag_dropout)
        self.fusion = LateFusion(num_labels, 2)
        self.label_count = LabelCountRegressor(2 * num_labels, count_hidden, count_dropout)
        self.image_label_count = LabelCountRegressor(num_labels, count_hidden, count_dropout)
        # Which parts have been trained; saved with the weights so that evaluation and export
        # know which prediction rules are meaningful.
        self.register_buffer("trained", torch.zeros(len(PARTS), dtype=torch.bool))

    def is_trained(self, part: str) -> bool:
        return bool(self.trained[PARTS.index(part)])

    def mark_trained(self, part: str) -> None:
        self.trained[PARTS.index(part)] = True

    def image_logits(self, image: Tensor) -> Tensor:
        logits = self.image_cnn(image)
        # torchvision's Inception/GoogLeNet return (logits, aux logits) in training mode.
        return logits[0] if isinstance(logits, tuple) else logits

    def image_counts(self, image_logits: Tensor) -> dict[str, Tensor]:
        """LQP_v's predicted label count from the image logits: normalised and in labels."""
        count_norm = self.image_label_count(image_logits.sigmoid())
        return {"image_count_norm": count_norm, "image_count": count_norm * self.count_scale}

    def forward(self, image: Tensor, tags: Tensor) -> dict[str, Tensor]:
        """Logits of every branch and both predicted label counts (``count``: LQP on ``v``;
        ``image_count``: LQP_v on ``vf``), in labels and normalised (``*_norm``)."""
        return self.from_image_logits(self.image_logits(image), tags)

    def from_image_logits(self, image_logits: Tensor, tags: Tensor) -> dict[str, Tensor]:
        """:meth:`forward` given the image CNN's logits (a frozen CNN's may come from a cache)."""
        tag_logits = self.tag_mlp(tags)
        v = torch.cat([image_logits.sigmoid(), tag_logits.sigmoid()], dim=1)
        count_norm = self.label_count(v)
        return {
            "image_logits": image_logits,
            "tag_logits": tag_logits,
            "fusion_logits": self.fusion(v),
            "count_norm": count_norm,
            "count": count_norm * self.count_scale,
            **self.image_counts(image_logits),
        }
