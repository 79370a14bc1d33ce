"""Figures shared by the models: drawn with matplotlib (Agg), saved under the run's ``figures/``
folder and sent to every logger that takes images (W&B, TensorBoard)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

log = logging.getLogger(__name__)


def labelled_image_grid(
    images: torch.Tensor, captions: Sequence[str], title: str | None = None, cols: int = 4
) -> Figure:
    """A grid of images ``[n, 3, H, W]`` (values in [0, 1]) with a caption under each."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, captions):
        ax.imshow(img.clamp(0, 1).permute(1, 2, 0).float().numpy())
        ax.set_title(caption, fontsize=7, loc="left", wrap=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def log_figure(trainer, fig: Figure, path: Path, key: str) -> None:
    """Save ``fig`` to ``path`` and send it to the trainer's image-capable loggers (rank 0 only)."""
    if not trainer.is_global_zero:
        plt.close(fig)
        return
    save_figure(fig, path)
    for logger in trainer.loggers:
        kind = type(logger).__name__
        try:
            if kind == "WandbLogger":
                logger.log_image(key=key, images=[str(path)])
            elif kind == "TensorBoardLogger":
                logger.experiment.add_figure(key, fig, global_step=trainer.global_step)
        except Exception as err:  # a logging backend must never fail a finished test run
            log.warning("could not send figure %s to %s: %s", key, kind, err)
    plt.close(fig)
    log.info("figure written to %s", path)
