"""What the image predictors of ``python -m experiments.predict`` share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image


def rgb_batches(images: list[Path], batch_size: int) -> Iterator[tuple[list[Path], list[Image.Image]]]:
    """Consecutive batches of ``batch_size`` image files: ``(paths, the images in RGB)``."""
    for start in range(0, len(images), batch_size):
        paths = images[start : start + batch_size]
        pictures = []
        for path in paths:
            with Image.open(path) as img:
                pictures.append(img.convert("RGB"))
        yield paths, pictures
