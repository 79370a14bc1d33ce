"""``scale``: every dataset's day-one steps at the real datasets' sizes, on this machine.

For each dataset and each ``--fraction`` of its real size, the scale twin
(``datamodules.synthetic.<dataset>.write_scale_twin``: the release's metadata files at that size,
every image a hard link to a few small JPEGs) is written once, then three steps run, each in a
fresh process so that its memory is its own, as a user's first run (and every DDP rank) pays them:

* ``prepare``: ``DataModule.prepare_data()`` (indexes, checks, tokenizers: once per node);
* ``setup``: ``DataModule.setup()`` in a new process (what every rank pays);
* ``pass``: one epoch of the training loader (``--workers`` processes) with the image work stubbed
  (a constant small image, a constant tensor from the pipeline: the loader's own work is measured,
  not JPEG decoding and resizing, whose cost per image does not depend on the dataset's size).

Recorded per step: wall and CPU seconds (the process and its loader workers), the peak resident set
size of the main process, and after the pass each loader worker's private memory (unique set size:
what ``fork`` did not share). Targets at full size: prepare + setup <= 60 s CPU and <= 2 GB peak RSS
per process; workers <= 100 MB private each.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.common import PROJECT_ROOT

DATASETS = {  # name: twin module (its write_scale_twin writes the release at a fraction of its real size)
    "nuswide": "datamodules.synthetic.nuswide",
    "sun397": "datamodules.synthetic.sun397",
    "crisismmd": "datamodules.synthetic.crisismmd",
    "coco": "datamodules.synthetic.coco",
    "imagenet_captions": "datamodules.synthetic.imagenet_captions",
}
STEPS = ("prepare", "setup", "pass")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--fraction", nargs="+", type=float, default=[0.1, 0.25, 1.0])
    parser.add_argument(
        "--root", type=Path, default=PROJECT_ROOT / "data" / "scale", help="where the twins go"
    )
    parser.add_argument("--workers", type=int, default=2, help="training-loader workers of the pass")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # one step, in a child process
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--overrides-json", help=argparse.SUPPRESS)
    parser.add_argument("--experiment", help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------ measurements
def cpu_seconds() -> float:
    """CPU time of this process and its finished children (loader workers) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def private_mb(pid: int) -> float | None:
    """Private (unshared) memory of a process in MB: ``Private_Clean + Private_Dirty`` of its
    ``smaps_rollup``; ``None`` where the kernel does not report it."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    kib = sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))
    return kib / 1024


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class ConstantImage:
    """Stands in for an image pipeline: the model-sized tensor of every picture, without the pixel work."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, image: Any) -> Any:
        import torch

        return torch.zeros(3, self.side, self.side)


def stub_image_work() -> None:
    """Every image read returns the same small picture and every image pipeline a constant tensor of
    the pipeline's output size: the pass measures the loader (index lookups, text, labels, batching,
    worker memory), not JPEG decoding or resizing, which scale with the pixels, not the dataset."""
    from PIL import Image

    from datamodules.base import DecodedImages
    from datamodules.preprocessing.images import ImageTransforms

    picture = Image.new("RGB", (64, 64), (120, 110, 100))
    DecodedImages.load = lambda self, i, path: picture.copy()
    ImageTransforms.train = ImageTransforms.eval = lambda self: ConstantImage(self.crop)


def measure_step(step: str, experiment: str, overrides: list[str], workers: int) -> dict[str, Any]:
    """One step in this (fresh) process; returns its figures."""
    from experiments.bench.common import compose_experiment
    from experiments.common import build

    cfg = compose_experiment(experiment, [*overrides, f"data.num_workers={workers}"])
    datamodule = build(cfg.data)
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    out: dict[str, Any] = {}
    if step == "pass":
        stub_image_work()
    if step == "prepare":
        datamodule.prepare_data()
    else:
        datamodule.setup("fit")
    if step == "pass":
        start_wall, start_cpu = time.perf_counter(), cpu_seconds()
        loader = datamodule.train_dataloader()
        iterator = iter(loader)
        batches = sum(1 for _ in iterator)
        workers_mb = [private_mb(w.pid) for w in getattr(iterator, "_workers", [])]
        out.update(batches=batches, items=len(loader.batch_sampler.sampler) if loader.batch_sampler else None)
        known = [m for m in workers_mb if m is not None]
        out["worker_private_mb"] = round(max(known), 1) if known else None
        del iterator, loader  # the workers exit; their CPU time joins RUSAGE_CHILDREN
    out.update(
        wall_s=round(time.perf_counter() - start_wall, 2),
        cpu_s=round(cpu_seconds() - start_cpu, 2),
        peak_rss_mb=round(peak_rss_mb(), 1),
    )
    return out


def run_child(step: str, dataset: str, experiment: str, overrides: list[str], workers: int) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "experiments.bench", "scale", "--step", step, "--dataset", dataset,
        "--experiment", experiment, "--overrides-json", json.dumps(overrides), "--workers", str(workers),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env)
    marker = "SCALE_RESULT "
    found = [line for line in proc.stdout.splitlines() if line.startswith(marker)]
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)[-600:]}
    return json.loads(found[-1][len(marker) :])


# ------------------------------------------------------------------------------------------ the benchmark
def write_twin(dataset: str, root: Path, fraction: float) -> dict[str, Any]:
    """The scale twin of ``dataset`` at ``fraction`` under ``root`` (written once; a marker file holds
    what its writer returned)."""
    marker = root / "scale_twin.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    writer = importlib.import_module(DATASETS[dataset]).write_scale_twin
    start = time.perf_counter()
    info = writer(root, fraction=fraction)
    info["write_s"] = round(time.perf_counter() - start, 1)
    from datamodules.files import atomic_write_text

    atomic_write_text(marker, json.dumps(info, indent=2))
    return info


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.step:  # a child: one step, result on stdout
        result = measure_step(args.step, args.experiment, json.loads(args.overrides_json), args.workers)
        print("SCALE_RESULT " + json.dumps(result), flush=True)
        sys.exit(0)
    rows = []
    for dataset in args.datasets:
        for fraction in args.fraction:
            root = args.root / f"{dataset}_f{fraction:g}"
            twin = write_twin(dataset, root, fraction)
            row: dict[str, Any] = {"dataset": dataset, "fraction": fraction, "items": twin["items"]}
            for step in STEPS:
                figures = run_child(step, dataset, twin["experiment"], twin["overrides"], args.workers)
                if "error" in figures:
                    row[f"{step}_error"] = figures["error"]
                    break
                for key, value in figures.items():
                    row[f"{step}_{key}"] = value
            if "prepare_cpu_s" in row and "setup_cpu_s" in row:
                row["prepare+setup_cpu_s"] = round(row["prepare_cpu_s"] + row["setup_cpu_s"], 2)
            rows.append(row)
    columns = [
        "dataset", "fraction", "items", "prepare_wall_s", "prepare_cpu_s", "prepare_peak_rss_mb",
        "setup_wall_s", "setup_cpu_s", "setup_peak_rss_mb", "prepare+setup_cpu_s", "pass_wall_s",
        "pass_cpu_s", "pass_worker_private_mb",
    ]  # fmt: skip
    errors = [
        f"{r['dataset']} x {r['fraction']}: {v}" for r in rows for k, v in r.items() if k.endswith("_error")
    ]
    return {
        "title": "day-one steps at the real datasets' sizes (scale twins)",
        "columns": columns,
        "rows": rows,
        "notes": [
            f"{args.workers} loader workers; image decoding and resizing stubbed in the pass; "
            "each step in a fresh process",
            "targets at fraction 1: prepare + setup <= 60 s CPU and <= 2 GB peak RSS per process; "
            "workers <= 100 MB private",
            *errors,
        ],
    }
