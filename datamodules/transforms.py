"""The image pipeline shared by every image model (torchvision transforms v2).

Eval: ``Resize(resize, bilinear) -> CenterCrop(crop) -> [0, 1] -> Normalize(mean, std)`` (the seed's
ImageNet preprocessing: 232 -> 224). Training uses the same pipeline unless augmentations are
configured in ``conf/augmentation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageTransforms:
    """Builds the train and eval transforms from one config node.

    Args:
        resize: shorter side after resizing (bilinear, antialiased).
        crop: side of the square center crop (eval) / final size (train).
        mean, std: normalisation statistics.
        hflip: probability of a horizontal flip at training time (0 = off).
    """

    def __init__(
        self,
        resize: int = 232,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        hflip: float = 0.0,
    ) -> None:
        self.resize, self.crop = int(resize), int(crop)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.hflip = float(hflip)

    def _head(self) -> list[v2.Transform]:
        return [v2.ToImage(), v2.Resize(self.resize, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
                v2.CenterCrop(self.crop)]

    def _tail(self) -> list[v2.Transform]:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train(self) -> v2.Compose:
        aug: list[v2.Transform] = [v2.RandomHorizontalFlip(self.hflip)] if self.hflip > 0 else []
        return v2.Compose(self._head() + aug + self._tail())

    def eval(self) -> v2.Compose:
        return v2.Compose(self._head() + self._tail())

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Undo ``Normalize``: model inputs ``[n, 3, H, W]`` -> values in [0, 1] for figures."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def describe(self) -> dict:
        """What a predictor needs to rebuild the eval pipeline (written next to exported models)."""
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}
