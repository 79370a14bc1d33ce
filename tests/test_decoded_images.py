"""The decoded-image cache stays inside its byte budget and says so when it is full."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from datamodules.base import DEFAULT_CACHE_MB, DecodedImages


def _images(tmp_path, n: int, side: int = 16):
    paths = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((side, side, 3), i, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_off_by_default_and_true_means_the_default_budget(tmp_path):
    paths = _images(tmp_path, 2)
    off = DecodedImages(2)
    off.load(0, paths[0])
    assert off.budget == 0 and off.used == 0
    assert DecodedImages(2, cache=True).budget == DEFAULT_CACHE_MB * 2**20


def test_cache_stops_at_its_budget_and_warns_once(tmp_path, caplog):
    paths = _images(tmp_path, 5)
    one_image = 16 * 16 * 3
    images = DecodedImages(5, cache=2.5 * one_image / 2**20)  # room for two images
    with caplog.at_level(logging.WARNING, logger="datamodules.base"):
        for i, path in enumerate(paths):
            assert np.asarray(images.load(i, path))[0, 0, 0] == i
    assert images.used == 2 * one_image and sorted(images._pixels) == [0, 1]
    assert caplog.text.count("decoded-image cache full") == 1
    paths[1].unlink()  # a cached image is served from memory
    assert np.asarray(images.load(1, paths[1]))[0, 0, 0] == 1
