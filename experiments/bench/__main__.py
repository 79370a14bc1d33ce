"""``python -m experiments.bench <name> [options] [hydra overrides]``: see :mod:`experiments.bench`."""

from __future__ import annotations

import argparse
import importlib
import logging
from datetime import datetime
from pathlib import Path

from experiments.bench.common import write_result
from experiments.common import PROJECT_ROOT

BENCHMARKS = {
    "overhead": "overhead",
    "pipeline": "pipeline",
    "retrieval": "retrieval",
    "relevance": "relevance",
    "metrics": "metrics_cost",
    "gpu": "gpu",
    "walltime": "walltime",
    "scale": "scale",
}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True)
    modules = {}
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(f"experiments.bench.{module_name}")
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        p.add_argument(
            "--out", type=Path, default=None, help="result folder (default logs/bench/<name>/<time>)"
        )
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    out = args.out or PROJECT_ROOT / "logs" / "bench" / args.name / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S"
    )
    result = modules[args.name].run(args)
    write_result(out, args.name, result)
    print((out / "result.md").read_text())
    print(f"written to {out}")
    return out


if __name__ == "__main__":
    main()
