"""``retrieval``: R@K of the COCO protocol for 5,000 images x 25,000 captions on the CPU.

Random unit vectors (d = 1024), :func:`lit_modules.metrics.coco_retrieval_metrics` as the 5K test
calls it. Reported: wall time (median of repeats), the bare similarity product ``images @ captions.T``
timed in the same process, interleaved with the metric's calls (so both see the same machine load),
and their ratio, in wall time and in CPU time (the process's, all threads: the fairer figure on a
shared machine); the peak extra resident memory of the call (Linux peak-RSS reset around it), next
to the size of the full similarity matrix it must not hold (5,000 x 25,000 float32 = 500 MB).
Targets: at most 1.3x the bare product (the rest is counting), memory bounded by the chunk size.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import time
from typing import Any

import torch

from experiments.bench.common import peak_rss, reset_peak_rss


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-sizes", nargs="*", type=int, default=[], help="chunk sizes to try (if the API takes one)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lit_modules.metrics import coco_retrieval_metrics

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(args.images, args.dim, generator=g), dim=1)
    captions = torch.nn.functional.normalize(torch.randn(5 * args.images, args.dim, generator=g), dim=1)
    takes_chunk = "chunk_size" in inspect.signature(coco_retrieval_metrics).parameters
    settings: list[dict[str, Any]] = [{}] + (
        [{"chunk_size": c} for c in args.chunk_sizes] if takes_chunk else []
    )
    full_mb = args.images * 5 * args.images * 4 / 2**20
    rows = []
    for kwargs in settings:
        times, bare, cpu, bare_cpu, peaks = [], [], [], [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            product = images @ captions.T
            bare.append(time.perf_counter() - start)
            bare_cpu.append(time.process_time() - start_cpu)
            del product
            base = reset_peak_rss()
            start, start_cpu = time.perf_counter(), time.process_time()
            result = coco_retrieval_metrics(images, captions, **kwargs)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            peaks.append(max(0, peak_rss() - base) / 2**20)
        rows.append(
            {
                "images": args.images,
                "captions": 5 * args.images,
                "dim": args.dim,
                "chunk_size": kwargs.get("chunk_size", "default"),
                "seconds": statistics.median(times),
                "bare_product_seconds": statistics.median(bare),
                "ratio": statistics.median(t / b for t, b in zip(times, bare)),
                "cpu_ratio": statistics.median(t / b for t, b in zip(cpu, bare_cpu)),
                "peak_extra_mb": max(peaks),
                "full_matrix_mb": full_mb,
                "rsum": float(result["rsum"]),
                "torch_threads": torch.get_num_threads(),
            }
        )
    return {
        "title": f"COCO R@K, {args.images} images x {5 * args.images} captions",
        "rows": rows,
        "columns": [
            "images",
            "captions",
            "dim",
            "chunk_size",
            "seconds",
            "bare_product_seconds",
            "ratio",
            "cpu_ratio",
            "peak_extra_mb",
            "full_matrix_mb",
            "rsum",
        ],
        "settings": vars(args),
        "notes": [
            "target: ratio <= 1.3 (the metric's time over the bare product's, each pair timed back to back); "
            "peak extra memory bounded by the chunk size, not by the full matrix",
            "rsum of random vectors is near chance (a sanity check that the call did its work)",
        ],
    }
