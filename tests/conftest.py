"""Shared fixtures: a small synthetic NUS-WIDE twin and a runner for the real command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

# Under pytest-xdist (make test), the workers share the cores: each, and every command it starts,
# gets its share of threads. Two workers of two OpenMP threads each on two cores spin against each
# other (the main job ran 3.7x as long as alone).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(
        max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_FORMATS = PROJECT_ROOT.parent / "shared" / "real-formats"

# Longest files first. pytest-xdist hands whole files to its processes in collection order
# (`--dist loadfile --no-loadscope-reorder`); a long file taken last leaves the other process idle
# for its whole length. tests/durations.json holds each file's measured seconds (setup + call +
# teardown, one process); `pytest --store-durations` measures them again. Unknown files go last.
DURATIONS_FILE = Path(__file__).with_name("durations.json")
_file_seconds: dict[str, float] = defaultdict(float)


def pytest_addoption(parser):
    parser.addoption(
        "--store-durations",
        action="store_true",
        help=f"write the seconds of each test file that ran into {DURATIONS_FILE.name}",
    )


def _known_durations() -> dict[str, float]:
    return json.loads(DURATIONS_FILE.read_text()) if DURATIONS_FILE.is_file() else {}


def pytest_collection_modifyitems(config, items):
    known = _known_durations()
    items.sort(key=lambda item: -known.get(item.nodeid.partition("::")[0], 0.0))  # stable within a file


def pytest_runtest_logreport(report):
    _file_seconds[report.nodeid.partition("::")[0]] += report.duration


def pytest_sessionfinish(session):
    # the controller sees every worker's reports; the workers write nothing
    if not session.config.getoption("store_durations") or hasattr(session.config, "workerinput"):
        return
    known = _known_durations()
    known.update({path: round(seconds, 1) for path, seconds in _file_seconds.items()})
    ordered = dict(sorted(known.items(), key=lambda kv: -kv[1]))
    DURATIONS_FILE.write_text(json.dumps(ordered, indent=1) + "\n")


# A small twin for pipeline tests: 32 px keeps the CNN fast; 900 images keep every split non-trivial.
SMALL_TWIN = {"num_images": 900, "image_size": 32, "seed": 0}


def real_format_file(*parts: str) -> Path:
    """A publisher's excerpt under ``../shared/real-formats``; skips the test with the reason when absent
    (users of the project do not have that folder)."""
    path = REAL_FORMATS.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real-format excerpt {path} is absent (../shared/real-formats not checked out)")
    return path


def run_cli(
    module: str, *args: str, timeout: int = 600, env: dict | None = None, expect_failure: bool = False
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` from the project root, as a user would; fail with its output
    when it fails (or, with ``expect_failure``, when it succeeds)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if (proc.returncode != 0) != expect_failure:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {proc.returncode}:\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def only_run(parent: Path) -> Path:
    """The one run dir (``metrics.json`` next to ``config.yaml``) under ``parent``."""
    runs = [p.parent for p in parent.rglob("metrics.json") if (p.parent / "config.yaml").exists()]
    assert len(runs) == 1, f"expected one run under {parent}, found {runs}"
    return runs[0]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """Folder the synthetic twins are generated into (``paths.synthetic_dir``), shared by the session."""
    return tmp_path_factory.mktemp("synthetic")


def small_twin_overrides(synthetic_dir: Path, log_dir: Path) -> list[str]:
    """Overrides that point the tagger at the small twin and write logs under ``log_dir``."""
    return [
        f"paths.synthetic_dir={synthetic_dir}",
        f"paths.log_dir={log_dir}",
        *(f"data.synthetic.{k}={v}" for k, v in SMALL_TWIN.items()),
        "augmentation.resize=32",
        "augmentation.crop=32",
    ]


def evaluate_on_one_and_two_processes(
    ckpt: str | Path, overrides: list[str], tmp_path: Path
) -> dict[str, dict]:
    """Test ``ckpt`` with ``trainer=cpu`` and ``trainer=ddp_cpu`` (2 gloo processes); return both
    ``metrics.json`` test dicts, after checking that each run dir holds one summary (rank 0 alone)."""
    results = {}
    for trainer in ("cpu", "ddp_cpu"):
        run_dir = tmp_path / trainer
        run_cli(
            "experiments.evaluate",
            f"ckpt_path={ckpt}",
            f"trainer={trainer}",
            f"run_dir={run_dir}",
            *overrides,
        )
        assert len(list(run_dir.rglob("metrics.json"))) == 1
        results[trainer] = read_metrics(run_dir)["test"]
    assert results["cpu"].keys() == results["ddp_cpu"].keys()
    return results
