"""``pipeline``: image loading + augmentation throughput of a DataModule vs a bare PIL + torchvision loop.

The same files, the same transform object (the experiment's ``augmentation``, training mode), the
same batch size, for 0, 1, 2 workers. The bare loop is a plain ``Dataset`` that opens each file with
PIL and applies the transform, under a plain shuffled ``DataLoader``. Each loader is iterated
``--passes`` times and the last pass is timed (so persistent workers, and the decoded-image cache
when ``data.cache_decoded`` is on, are warm, as they are from the second epoch of a run on).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightning as L
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from experiments.bench.common import compose_experiment
from experiments.stages import build_data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment", default="hashtag", help="an experiment whose dataset holds image files"
    )
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--passes", type=int, default=2, help="passes over the data; the last one is timed")
    parser.add_argument("--cache", default="false,true", help="data.cache_decoded settings, comma-separated")
    parser.add_argument("overrides", nargs="*")


class BareImageFolder(Dataset):
    """``(tensor, label)`` from a list of files: PIL open + RGB + the transform, nothing else."""

    def __init__(self, files: list[Path], labels: list[int], transform: Any) -> None:
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


def image_files(dataset: Any) -> tuple[list[Path], list[int]]:
    """The files and labels behind a suite dataset (``image_root`` + ``records`` as in SUN397)."""
    if hasattr(dataset, "records"):
        return (
            [Path(dataset.image_root) / r[0] for r in dataset.records],
            [dataset.targets[r[1]] for r in dataset.records],
        )
    raise ValueError(f"{type(dataset).__name__}: no list of image files to compare with")


def images_per_second(loader: DataLoader, passes: int) -> float:
    seconds, count = 0.0, 0
    for _ in range(passes):
        start, count = time.perf_counter(), 0
        for batch in loader:
            images = batch["image"] if isinstance(batch, dict) else batch[0]
            count += len(images)
        seconds = time.perf_counter() - start
    return count / seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for cache in args.cache.split(","):
        for workers in args.workers:
            cfg = compose_experiment(
                args.experiment,
                [*args.overrides, f"data.num_workers={workers}", f"data.cache_decoded={cache}"],
            )
            L.seed_everything(cfg.seed)
            datamodule = build_data(cfg)
            suite = images_per_second(datamodule.train_dataloader(), args.passes)
            files, labels = image_files(datamodule.data_train)
            bare_loader = DataLoader(
                BareImageFolder(files, labels, datamodule.data_train.transform),
                batch_size=int(cfg.data.batch_size),
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            bare = images_per_second(bare_loader, args.passes)
            rows.append(
                {
                    "cache_decoded": cache,
                    "workers": workers,
                    "images": len(files),
                    "bare_img_s": bare,
                    "suite_img_s": suite,
                    "suite_vs_bare_pct": 100.0 * suite / bare,
                }
            )
    return {
        "title": f"image pipeline throughput ({args.experiment} data, training transforms)",
        "columns": ["cache_decoded", "workers", "images", "bare_img_s", "suite_img_s", "suite_vs_bare_pct"],
        "rows": rows,
        "settings": vars(args),
        "notes": [
            "target: suite >= 90 % of the bare loop at every worker count; "
            "throughput should grow with workers",
            "cache_decoded keeps decoded pixels in memory (per worker process): the suite's fast path "
            "for small datasets such as the twins",
        ],
    }
