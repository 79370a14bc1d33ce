"""Test-time augmentation and the inverse check of the hashtag classifier (seed 002).

TTA: ``n`` augmented copies of each image at the training strength ``k``, class probabilities
(softmax) averaged over the copies: ``p(c | x) = 1/n sum_j softmax(f(a_j(x)))_c``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.transforms import v2

from datamodules.preprocessing.images import strength_augmentations
from lit_modules.hashtag.networks import main_logits


def tta_probabilities(
    net: Callable[[Tensor], Tensor],
    images: Tensor,
    augment: Callable[[Tensor], Tensor] | None,
    copies: int = 8,
) -> Tensor:
    """Softmax averaged over ``copies`` augmented versions of each image of ``images`` ``[n, 3, H, W]``.

    ``augment`` maps a batch ``[n, 3, H, W]`` to an augmented one, drawing one random augmentation
    per call (so each copy applies one augmentation to the whole batch: ``copies`` calls instead of
    ``copies x n``, which keeps CPU evaluation fast); ``None`` or ``copies <= 1``: the plain softmax.
    """
    if augment is None or copies <= 1:
        return main_logits(net(images)).softmax(dim=1)
    return sum(main_logits(net(augment(images))).softmax(dim=1) for _ in range(copies)) / copies


class NormalizedAugment:
    """Augment already normalised images ``[..., 3, H, W]`` at strength ``k``: denormalise to [0, 1],
    apply the strength-``k`` augmentations (:func:`datamodules.preprocessing.images.strength_augmentations`;
    one random draw per call), normalise again."""

    def __init__(self, k: float, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.pipeline = v2.Compose(strength_augmentations(k, size))
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        mean, std = self.mean.to(image.device), self.std.to(image.device)
        x = (image * std + mean).clamp(0, 1)
        return (self.pipeline(x) - mean) / std


def implausible_tags(
    probs: Tensor, tags: Sequence[str], label_names: Sequence[str], min_probability: float
) -> tuple[list[dict], list[str]]:
    """The inverse check: which user hashtags does the model find implausible for this image?

    A known hashtag (one of ``label_names``, ``#`` and case ignored) is implausible when the model
    gives it probability below ``min_probability``. Returns ``(checked, unknown)``: per known tag
    ``{"tag", "probability", "plausible"}``, and the tags outside the vocabulary (not judged).
    """
    index = {name.lower(): i for i, name in enumerate(label_names)}
    checked, unknown = [], []
    for tag in tags:
        key = tag.lstrip("#").lower()
        if key not in index or key == "other":
            unknown.append(tag)
            continue
        p = float(probs[index[key]])
        checked.append({"tag": tag, "probability": round(p, 4), "plausible": p >= min_probability})
    return checked, unknown
