"""The decoded-image cache stays inside its byte budget and says so when it is full."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
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
    off = DecodedImages()
    off.load(0, paths[0])
    assert off.budget == 0 and off.used == 0
    assert DecodedImages(cache=True).budget == DEFAULT_CACHE_MB * 2**20


def test_cache_stops_at_its_budget_and_warns_once(tmp_path, caplog):
    paths = _images(tmp_path, 5)
    one_image = 16 * 16 * 3
    images = DecodedImages(cache=2.5 * one_image / 2**20)  # room for two images
    with caplog.at_level(logging.WARNING, logger="datamodules.base"):
        for i, path in enumerate(paths):
            assert np.asarray(images.load(i, path))[0, 0, 0] == i
    assert images.used == 2 * one_image and sorted(images._pixels) == [0, 1]
    assert caplog.text.count("decoded-image cache full") == 1
    paths[1].unlink()  # a cached image is served from memory
    assert np.asarray(images.load(1, paths[1]))[0, 0, 0] == 1


PROBE = """
import sys
import numpy as np
import pytest
if sys.argv[1] == "fixed":
    from datamodules.base import fix_mmap_threshold
    assert fix_mmap_threshold()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
first = np.ones(3 * 2**20 // 8)
del first  # a freed mmapped block raises glibc's threshold to its size
before = rss_mb()
blocks = [np.ones(3 * 2**20 // 8) for _ in range(40)]  # 120 MB of image-sized arrays
keep = blocks[-1]
del blocks  # every block freed but the last, which pins the heap's top
print(rss_mb() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_freed_image_sized_blocks_return_to_the_os_with_the_fixed_threshold():
    """Why loaders fix glibc's mmap threshold: with its default dynamic threshold, image-sized blocks
    freed after a first one stay in the heap (the process keeps ~120 MB); fixed, they are unmapped."""
    import ctypes
    import subprocess
    import sys

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}

    def retained(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], cwd=root, env=env, capture_output=True, text=True, check=True
        )
        return float(out.stdout)

    assert retained("default") > 60 and retained("fixed") < 20
