"""The augmentation strength k: identity at k = 0, stronger with k, p = 0.4 + 0.1k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from datamodules.preprocessing.images import ImageTransforms, strength_augmentations, strength_probability


def _image(seed: int = 0, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 5, yy * 5, (xx + yy) * 2], -1) % 256
    return Image.fromarray((base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8))


def test_k0_train_is_the_eval_pipeline():
    img = _image()
    t = ImageTransforms(resize=40, crop=32, k=0)
    torch.manual_seed(0)
    for _ in range(5):
        assert torch.equal(t.train()(img), t.eval()(img))
    assert "k" not in t.describe()  # the tagger's export is unchanged


def test_probability_formula():
    assert strength_probability(0) == 0.0
    assert strength_probability(1) == pytest.approx(0.5)
    assert strength_probability(4) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        ImageTransforms(k=7)


def test_strength_grows_with_k():
    torch.manual_seed(0)
    imgs = [_image(s) for s in range(4)]
    change = []
    for k in (0, 1, 3, 5):
        t = ImageTransforms(resize=48, crop=48, k=k)
        train, ev = t.train(), t.eval()
        change.append(np.mean([(train(i) - ev(i)).abs().mean().item() for i in imgs for _ in range(25)]))
    assert change[0] == 0.0
    assert change[0] < change[1] < change[2] < change[3], change


def test_transform_parameters_follow_k():
    aug = strength_augmentations(2, 32)
    rotation = aug[0].transforms[0]
    assert isinstance(rotation, v2.RandomRotation) and list(rotation.degrees) == [-20.0, 20.0]
    assert aug[0].p == pytest.approx(0.6)
    crop = aug[1].transforms[0]
    assert crop.scale[0] == pytest.approx(0.64) and crop.ratio == (1.0, 1.0)
    jitter = aug[-1].transforms[0]
    assert jitter.brightness == pytest.approx((0.8, 1.2)) and jitter.saturation == pytest.approx((0.8, 1.2))
    assert jitter.hue == pytest.approx((-0.2, 0.2))
    out = v2.Compose(aug)(torch.zeros(3, 32, 32, dtype=torch.uint8))
    assert out.shape == (3, 32, 32)


def test_keep_aspect_false_squashes_the_whole_image_into_the_square():
    # A 2:1 image with white bands at its left and right edges:
    # a center crop drops them, a square resize keeps them.
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:, :8] = pixels[:, -8:] = 255
    image = Image.fromarray(pixels)
    cropped = ImageTransforms(resize=16, crop=16, mean=(0, 0, 0), std=(1, 1, 1)).eval()(image)
    squashed_tf = ImageTransforms(resize=16, crop=16, mean=(0, 0, 0), std=(1, 1, 1), keep_aspect=False)
    squashed = squashed_tf.eval()(image)
    assert cropped.shape == squashed.shape == (3, 16, 16)
    assert cropped[:, :, 0].max() < 0.1 and squashed[:, :, 0].min() > 0.9
    assert ImageTransforms(**squashed_tf.describe()).keep_aspect is False  # exports carry it
