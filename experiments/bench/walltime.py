"""``walltime``: the main job and the test suite end to end, as a user runs them.

Runs ``python -m experiments.train experiment=<main>`` (README: ``make job``) and, with ``--tests``,
``python -m pytest -q <pytest args>`` (default: as ``make test``, two worker processes) in
subprocesses from the project root, and records their wall time and exit status. Targets: main job
<= 3 minutes, suite <= 15 minutes on the 2-core CPU machines.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

from experiments.common import PROJECT_ROOT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="tagger", help="the main job's experiment")
    parser.add_argument("--tests", action="store_true", help="also time the test suite")
    parser.add_argument(
        "--pytest-args",
        default="-n 2 --dist loadfile --no-loadscope-reorder",
        help="one string (default: as make test), e.g. \"-m 'not slow'\" or a test file",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the main job (e.g. debug=fdr)")


def timed(command: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1:] or [""]
    return {
        "command": " ".join(command[1:]),
        "seconds": seconds,
        "minutes": seconds / 60,
        "exit_code": proc.returncode,
        "last_line": tail[0][:160],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    python = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory() as logs:  # the job's run dir does not pile up in logs/
        job = [*python, "experiments.train", f"experiment={args.experiment}", f"paths.log_dir={logs}"]
        rows = [{"what": "main job", **timed([*job, *args.overrides])}]
    if args.tests:
        pytest = [*python, "pytest", "-q", "-p", "no:cacheprovider", *shlex.split(args.pytest_args)]
        rows.append({"what": "test suite", **timed(pytest)})
    return {
        "title": "end-to-end wall time",
        "columns": ["what", "command", "minutes", "exit_code", "last_line"],
        "rows": rows,
        "settings": vars(args),
        "notes": ["targets on 2 CPU cores: main job <= 3 min, test suite <= 15 min"],
    }
