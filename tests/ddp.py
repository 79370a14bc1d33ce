"""Run a torchmetrics Metric in 2+ CPU processes (gloo), each on its own shard, and collect what
``compute()`` returns on every rank: the DDP check of the torchmetrics test style."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, Tensor) else value


def _worker(rank: int, world_size: int, port: int, make_metric: Callable, shards: list, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=30))
    try:
        metric = make_metric()
        preds, target = shards[rank]
        for p, t in zip(preds.tensor_split(2), target.tensor_split(2)):  # two updates per rank
            metric.update(p, t)
        torch.save(_to_plain(metric.compute()), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def compute_on_ranks(make_metric: Callable, shards: list[tuple[Tensor, Tensor]], out_dir: Path) -> list[Any]:
    """``make_metric`` must be picklable (a class or a ``functools.partial``); one shard per rank."""
    world_size = len(shards)
    mp.spawn(
        _worker,
        args=(world_size, _free_port(), make_metric, shards, str(out_dir)),
        nprocs=world_size,
        join=True,
    )
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world_size)]
