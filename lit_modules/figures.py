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
from torch import Tensor  # noqa: E402

from datamodules.files import atomic_path  # noqa: E402
from lit_modules.metrics.selective import row_normalize  # noqa: E402

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
        ax.imshow(img.clamp(0, 1).permute(1, 2, 0).float().cpu().numpy())
        ax.set_title(caption, fontsize=7, loc="left", wrap=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def tagged_examples_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    predicted: torch.Tensor,
    names: Sequence[str],
    image_pipeline: dict | None,
    title: str,
) -> Figure:
    """Test images (normalised by ``image_pipeline``, undone here) with their true and predicted
    labels (0/1 rows ``[n, C]``): the tagger seed's example table."""
    images, labels, predicted = images.detach().cpu(), labels.cpu(), predicted.cpu()
    if image_pipeline:
        mean = torch.tensor(image_pipeline["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(image_pipeline["std"]).view(1, -1, 1, 1)
        images = images * std + mean

    def named(row: Tensor) -> str:
        return " ".join(names[j] for j in row.nonzero().flatten().tolist())

    captions = [f"true: {named(true)}\npred: {named(pred)}" for true, pred in zip(labels, predicted)]
    return labelled_image_grid(images, captions, title=title)


def confusion_figure(confusion: Tensor, names: list[str], title: str):
    """Row-normalised confusion matrix (rows: true hashtag, columns: predicted) with hashtag names;
    hashtags that neither occur nor are predicted are left out."""
    confusion = confusion.cpu()
    keep = ((confusion.sum(0) + confusion.sum(1)) > 0).nonzero().flatten().tolist() or list(range(len(names)))
    norm = row_normalize(confusion[keep][:, keep]).numpy()
    labels = [names[i] for i in keep]
    size = max(4.0, 0.45 * len(keep) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(keep)), labels, rotation=70, ha="right", fontsize=8)
    ax.set_yticks(range(len(keep)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(keep)):
        for j in range(len(keep)):
            if norm[i, j] >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def risk_coverage_figure(
    curves: dict[str, dict[str, Tensor]], threshold: float, threshold_tta: float, target: float
):
    """Risk (1 - precision of the suggestions) against coverage, plain and TTA, with the chosen points."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, label, t in (("test", "no TTA", threshold), ("test_tta", "TTA", threshold_tta)):
        curve = curves.get(name)
        if curve is None or curve["coverage"].numel() == 0:
            continue
        (line,) = ax.plot(curve["coverage"].cpu().numpy(), curve["risk"].cpu().numpy(), label=label)
        chosen = (curve["threshold"] >= t).nonzero().flatten()
        if chosen.numel():
            i = int(chosen[-1])
            ax.plot([float(curve["coverage"][i])], [float(curve["risk"][i])], "o", color=line.get_color())
    ax.axhline(1 - target, ls="--", color="grey", lw=0.8, label=f"target risk {1 - target:.2f}")
    ax.set_xlabel("coverage (share of test images given a hashtag)")
    ax.set_ylabel("risk (1 - precision)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("risk-coverage (dots: thresholds chosen on validation)")
    fig.tight_layout()
    return fig


def log_figure(trainer, fig: Figure, path: Path, key: str) -> None:
    """Save ``fig`` to ``path`` and send it to the trainer's image-capable loggers (rank 0 only)."""
    if not trainer.is_global_zero:
        plt.close(fig)
        return
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
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
