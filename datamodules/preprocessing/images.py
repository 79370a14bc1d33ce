"""The image pipeline shared by every image model (torchvision transforms v2).

Eval: ``Resize(resize, bilinear) -> CenterCrop(crop) -> [0, 1] -> Normalize(mean, std)`` (the seed's
ImageNet preprocessing: 232 -> 224); with ``keep_aspect=False`` the resize is to ``resize x resize``
whatever the aspect ratio (the hashtag seed's "reduce every image to 256 x 256"). Training uses the
same pipeline unless augmentations are configured in ``conf/augmentation``:

* ``hflip`` (``augmentation=flip``): a horizontal flip with that probability;
* ``k`` (``augmentation=strength augmentation.k=2``): the hashtag seed's (002) single strength
  knob. Each transform below is applied independently with probability ``p = 0.4 + 0.1 k``, after
  the resize and center crop, on the uint8 image:

  ==========================  ====================================================================
  rotation                    angle uniform in ``[-10k, +10k]`` degrees
  random crop                 square of side ``1 - 0.1k .. 1`` of the image, resized back
  translation                 up to ``0.1k`` of the side, horizontally and vertically
  shear                       up to ``0.05k`` of the side (angle ``atan(0.05k)``), both axes
  aspect ratio                one side stretched by ``s`` in ``[1 - 0.1k, 1 + 0.1k]``, center crop / pad back
  horizontal flip             probability ``p``
  colour                      brightness, contrast, saturation factors in ``[max(0, 1 - 0.1k), 1 + 0.1k]``;
                              hue shifted by up to ``0.1k`` of the hue circle (torchvision caps it at 0.5)
  ==========================  ====================================================================

  ``k = 0`` is off (the pipeline is exactly the eval one plus ``hflip``); ``0 <= k <= 6`` keeps
  ``p <= 1``. Test-time augmentation uses :meth:`ImageTransforms.train` (the training strength).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_STRENGTH = 6.0


def strength_probability(k: float) -> float:
    """Probability ``p = 0.4 + 0.1 k`` of each augmentation at strength ``k`` (0 when ``k = 0``)."""
    return 0.0 if k <= 0 else min(1.0, 0.4 + 0.1 * k)


class RandomAspectRatio(v2.Transform):
    """Stretch one side (height or width, at random) by ``s ~ U[1 - max_change, 1 + max_change]``,
    then center-crop (or zero-pad) back to the input size."""

    def __init__(self, max_change: float) -> None:
        super().__init__()
        self.max_change = float(max_change)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        s = 1.0 + (2 * torch.rand(()).item() - 1) * self.max_change
        return {"s": max(s, 1e-3), "vertical": bool(torch.rand(()) < 0.5)}

    # torchvision < 0.21 calls it _get_params
    def _get_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self.make_params(flat_inputs)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        h, w = TF.get_size(inpt)
        size = (
            [max(1, round(h * params["s"])), w] if params["vertical"] else [h, max(1, round(w * params["s"]))]
        )
        return TF.center_crop(TF.resize(inpt, size, antialias=True), [h, w])

    def _transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self.transform(inpt, params)


def strength_augmentations(k: float, size: int) -> list[v2.Transform]:
    """The seed's augmentations at strength ``k`` for square ``size`` images (see module doc)."""
    if k <= 0:
        return []
    if k > MAX_STRENGTH:
        raise ValueError(
            f"augmentation strength k must be in [0, {MAX_STRENGTH}] (p = 0.4 + 0.1k <= 1), got {k}"
        )
    p = strength_probability(k)
    low, high = max(0.0, 1 - 0.1 * k), 1 + 0.1 * k
    shear = math.degrees(math.atan(0.05 * k))
    side = max(0.05, 1 - 0.1 * k)

    def maybe(t: v2.Transform) -> v2.Transform:
        return v2.RandomApply([t], p=p)

    return [
        maybe(v2.RandomRotation(10.0 * k, interpolation=v2.InterpolationMode.BILINEAR)),
        maybe(v2.RandomResizedCrop(size, scale=(side * side, 1.0), ratio=(1.0, 1.0), antialias=True)),
        maybe(v2.RandomAffine(degrees=0.0, translate=(0.1 * k, 0.1 * k))),
        maybe(v2.RandomAffine(degrees=0.0, shear=(-shear, shear, -shear, shear))),
        maybe(RandomAspectRatio(0.1 * k)),
        v2.RandomHorizontalFlip(p),
        maybe(
            v2.ColorJitter(
                brightness=(low, high), contrast=(low, high), saturation=(low, high), hue=min(0.5, 0.1 * k)
            )
        ),
    ]


class ImageTransforms:
    """Builds the train and eval transforms from one config node.

    Args:
        resize: shorter side after resizing (bilinear, antialiased); both sides with ``keep_aspect=False``.
        crop: side of the square center crop (eval) / final size (train).
        keep_aspect: ``False`` stretches every image to ``resize x resize`` instead of cropping its
            longer side away (4:3 SUN397 scenes keep their whole width).
        mean, std: normalisation statistics.
        hflip: probability of a horizontal flip at training time (0 = off).
        k: augmentation strength of the hashtag seed (0 = off; see module doc). With ``k > 0`` the
            flip probability is ``p = 0.4 + 0.1 k`` unless ``hflip`` is set.
    """

    def __init__(
        self,
        resize: int = 232,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        hflip: float = 0.0,
        k: float = 0.0,
        keep_aspect: bool = True,
    ) -> None:
        self.resize, self.crop = int(resize), int(crop)
        self.keep_aspect = bool(keep_aspect)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.hflip = float(hflip)
        self.k = float(k)
        if not 0.0 <= self.k <= MAX_STRENGTH:
            raise ValueError(f"augmentation strength k must be in [0, {MAX_STRENGTH}], got {k}")

    def _head(self) -> list[v2.Transform]:
        size = self.resize if self.keep_aspect else [self.resize, self.resize]
        return [
            v2.ToImage(),
            v2.Resize(size, interpolation=v2.InterpolationMode.BILINEAR, antialias=True),
            v2.CenterCrop(self.crop),
        ]

    def _tail(self) -> list[v2.Transform]:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train(self) -> v2.Compose:
        aug = strength_augmentations(self.k, self.crop)  # none at k = 0
        if self.hflip > 0:  # an explicit flip probability wins over p
            flip = v2.RandomHorizontalFlip(self.hflip)
            aug = [flip if isinstance(t, v2.RandomHorizontalFlip) else t for t in aug] or [flip]
        return v2.Compose(self._head() + aug + self._tail())

    def eval(self) -> v2.Compose:
        return v2.Compose(self._head() + self._tail())

    def describe(self) -> dict:
        """What a predictor needs to rebuild the eval pipeline (written next to exported models)."""
        out = {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std)}
        if not self.keep_aspect:
            out["keep_aspect"] = False
        if self.k > 0 or self.hflip > 0:  # what test-time augmentation needs; see training_images_vary
            out.update(k=self.k, hflip=self.hflip)
        return out


def training_images_vary(described: Mapping[str, Any]) -> bool:
    """Whether the training transform that :meth:`ImageTransforms.describe` described is random: with
    augmentation on, a frozen network's output for one training image differs from epoch to epoch."""
    return described.get("k", 0) > 0 or described.get("hflip", 0) > 0
