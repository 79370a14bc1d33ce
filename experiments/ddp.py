"""DDP launching that works with Hydra sweeps.

Lightning's ``strategy=ddp`` starts ranks 1..N-1 by re-running the script with the same command
line. Under ``-m`` that command line is the whole sweep, so every child re-runs every sweep point
(Lightning issue #11300), and the next point of the sweep finds the first point's DDP variables in
the environment and waits for children that are gone. Two fixes, both here and applied by every
entry point:

* :func:`use_job_command_for_children`: children re-run *this job only*: its own overrides
  (``HydraConfig.overrides.task``, sweep values resolved) in its own output dir, without ``-m``;
* :func:`reset_launcher_environment`: after each job, the process group is closed and the variables
  Lightning's launcher set in this process are removed, so the next sweep point launches its own
  children.

On SLURM (and under torchrun) the processes are created outside Python: Lightning sees
``SLURM_NTASKS``/``LOCAL_RANK`` and launches nothing, and neither fix has anything to do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: Set by Lightning's subprocess launcher in the launching process.
_LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: Present at start-up: set by SLURM, torchrun or a launching parent; never touched.
_EXTERNAL = {name for name in _LAUNCHER_VARIABLES if name in os.environ}


def _job_command(local_rank: int) -> tuple[Sequence[str], str]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    import __main__

    hydra_cfg = HydraConfig.get()
    command = (
        [sys.executable, "-m", __main__.__spec__.name] if __main__.__spec__ else [sys.executable, sys.argv[0]]
    )
    command += list(hydra_cfg.overrides.task)
    # Same output dir as this job; no second .hydra/ folder (rank 0 wrote it).
    command += [
        f'hydra.run.dir="{hydra_cfg.runtime.output_dir}"',
        f"hydra.job.name={hydra_cfg.job.name}_rank{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def use_job_command_for_children() -> None:
    """Make Lightning's DDP children run the current Hydra job, not the whole command line."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = _job_command


def reset_launcher_environment() -> None:
    """Close this job's process group and forget the DDP variables this process's launcher set,
    so that the next sweep point starts its own group with its own children."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name in _LAUNCHER_VARIABLES:
        if name not in _EXTERNAL:
            os.environ.pop(name, None)
