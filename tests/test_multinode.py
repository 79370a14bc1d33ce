"""``trainer.num_nodes``: two nodes of one process each, on this machine, test a checkpoint with the
same metrics as one process. Each "node" is a separate launch, as on a cluster: with the variables a
2-node SLURM allocation gives each task (``sbatch --nodes=2 --ntasks-per-node=1``, Lightning's
SLURMEnvironment), or with two ``torchrun`` invocations that meet at a rendezvous on localhost
(Lightning's TorchElasticEnvironment). Both nodes find the same run dir by themselves (the SLURM job
id, the torchrun rendezvous id) and only rank 0 writes the summary."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, read_metrics, run_cli, small_twin_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir) -> tuple[str, list[str]]:
    """A checkpoint of the tagger's first stage on the small twin, and the overrides to test it."""
    logs = tmp_path_factory.mktemp("multinode")
    overrides = ["experiment=tagger", *small_twin_overrides(synthetic_dir, logs)]
    run_dir = logs / "trained"
    run_cli(
        "experiments.train",
        *overrides,
        "export=false",
        "run_stages=[image_cnn]",
        "debug=limit",
        f"run_dir={run_dir}",
    )
    return read_metrics(run_dir)["stages"]["image_cnn"]["best_checkpoint"], overrides


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_node(launcher: str, node: int, port: int, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    if launcher == "slurm":  # what srun sets in each task of `sbatch --nodes=2 --ntasks-per-node=1`
        env.update(
            SLURM_JOB_ID="4242",
            SLURM_JOB_NAME="multinode",
            SLURM_NNODES="2",
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="1",
            SLURM_NODELIST="127.0.0.1",
            SLURM_NODEID=str(node),
            SLURM_PROCID=str(node),
            SLURM_LOCALID="0",
            MASTER_PORT=str(port),
        )
        command = [sys.executable, "-m", "experiments.evaluate", *args]
    else:
        command = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"),
            *(f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", "--rdzv-id=mn7"),
            *("-m", "experiments.evaluate", *args),
        ]
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )


@pytest.mark.parametrize("launcher", ["slurm", "torchrun"])
def test_two_nodes_of_one_process_give_the_one_process_test_metrics(trained, launcher, tmp_path):
    ckpt, overrides = trained
    single = tmp_path / "one_process"
    run_cli("experiments.evaluate", f"ckpt_path={ckpt}", "trainer=cpu", f"run_dir={single}", *overrides)
    expected = read_metrics(single)["test"]

    logs = tmp_path / "logs"
    args = [
        f"ckpt_path={ckpt}",
        *overrides,
        f"paths.log_dir={logs}",  # no run_dir: each node derives the same one
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
    ]
    port = _free_port()
    nodes = [launch_node(launcher, node, port, args, tmp_path / f"node{node}.log") for node in (0, 1)]
    codes = [proc.wait(timeout=600) for proc in nodes]
    logs_text = [(tmp_path / f"node{n}.log").read_text() for n in (0, 1)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs_text)
    summaries = list(logs.rglob("metrics.json"))
    name = "slurm-4242" if launcher == "slurm" else "torchrun-mn7"
    assert [p.parent.name for p in summaries] == [name], summaries  # one run dir, one summary (rank 0)
    # both nodes joined one process group, one rank each
    assert "MEMBER: 1/2" in logs_text[0] and "MEMBER: 2/2" in logs_text[1]
    result = read_metrics(summaries[0].parent)["test"]
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        if key.endswith("loss"):  # a mean of per-batch means: the batches differ
            continue
        assert result[key] == pytest.approx(value, abs=1e-6), key
