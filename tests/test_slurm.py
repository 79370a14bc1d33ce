"""The SLURM path on a real one-node cluster (experiments/slurm/local_cluster.sh): a sweep submitted
as a job array through the Hydra launcher, and a job requeued on SIGUSR1 that resumes with its step
count. Skipped with the reason when no cluster can be started here (not root, no apt, no SLURM)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, read_metrics, run_cli, small_twin_overrides

pytestmark = pytest.mark.slow
SCRIPT = PROJECT_ROOT / "experiments" / "slurm" / "local_cluster.sh"


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (munge, slurmd)")
    if shutil.which("sinfo") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and apt-get is not available to install it")
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"could not start a local SLURM cluster: {proc.stderr.strip()[-500:]}")
    return True


def slurm_overrides(synthetic_dir: Path, log_dir: Path) -> list[str]:
    return [
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=20",
        "experiment=tagger",
        "export=false",
        *small_twin_overrides(synthetic_dir, log_dir),
    ]


def test_sweep_runs_as_a_job_array(cluster, tmp_path, synthetic_dir):
    run_cli(
        "experiments.train",
        "-m",
        *slurm_overrides(synthetic_dir, tmp_path),
        "run_stages=[image_cnn]",
        "debug=limit",
        "optimizer=adamw,sgd",
    )
    sweep = next((tmp_path / "debug" / "multiruns" / "tagger").iterdir())
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    assert list((sweep / ".submitit").iterdir())  # really went through sbatch
    for job in jobs:
        assert read_metrics(sweep / job)["stages"]["image_cnn"]["global_step"] == 6


def test_requeue_on_signal_resumes_with_the_step_count(cluster, tmp_path, synthetic_dir):
    args = [
        *slurm_overrides(synthetic_dir, tmp_path),
        "run_stages=[image_cnn,tag_mlp]",
        "trainer.limit_train_batches=10",
        "stages.image_cnn.trainer.max_epochs=12",
        "stages.tag_mlp.trainer.max_epochs=2",
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "-m", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        last = None
        while time.time() < deadline and launcher.poll() is None:
            last = next(
                iter(tmp_path.glob("train/multiruns/tagger/*/0/checkpoints/image_cnn/last.ckpt")), None
            )
            if last is not None:
                break
            time.sleep(0.2)
        assert last is not None, "the job never wrote a checkpoint"
        job_id = next(p.name for p in last.parents[3].glob(".submitit/*") if p.is_dir() and p.name.isdigit())
        # SIGUSR1 to the job step (the training process): Lightning saves hpc_ckpt_1 and requeues.
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)
        while time.time() < deadline:  # skip SLURM's requeue hold (EligibleTime = now + 2 min)
            state = subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True
            ).stdout
            if "PENDING" in state:
                subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], timeout=30)
                break
            time.sleep(0.5)
        assert launcher.wait(timeout=300) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    run_dir = last.parents[2]
    summary = read_metrics(run_dir)
    assert (
        summary["stages"]["image_cnn"]["global_step"] == 120
    )  # 12 epochs x 10 batches, none lost or repeated
    assert summary["stages"]["tag_mlp"]["global_step"] == 20
    assert (run_dir / "checkpoints" / "image_cnn" / "hpc_ckpt_1.ckpt").exists()
    log = "".join(p.read_text() for p in run_dir.parent.glob(".submitit/*/*_log.err"))
    assert "continuing a requeued run" in "".join(
        p.read_text() for p in run_dir.parent.glob(".submitit/*/*_log.*")
    )
    # the requeue's SIGTERM may save a newer requeue checkpoint (hpc_ckpt_2) after the SIGUSR1 one
    assert re.search(r"Restored all states from the checkpoint at \S*hpc_ckpt_\d+\.ckpt", log)
