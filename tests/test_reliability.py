"""Faults a cluster user meets, reproduced in tmp dirs on the synthetic twins, and the suite's answer to
each: no lost or mixed run, no silent success, bad input caught early.

Unit tests (tiny Lightning modules in this process) first; the tests through the real command lines
are marked slow."""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import experiments.common as common
from datamodules.base import image_is_readable
from datamodules.synthetic import cache
from experiments.common import RunDirInUse, build, claim_dir
from experiments.run_checks import RunOptionError, check_run_options
from experiments.stages import stage_configs
from lit_modules.callbacks import (
    AtomicCheckpointIO,
    NonFiniteLossError,
    NonFiniteLossGuard,
    SigtermCheckpoint,
    TrimResumedLogs,
)
from lit_modules.loggers import ResumableCSVLogger
from tests.conftest import PROJECT_ROOT, read_metrics, run_cli, small_twin_overrides

CONF = str(PROJECT_ROOT / "conf")
EXPERIMENTS = sorted(p.stem for p in Path(CONF, "experiment").glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train.yaml", overrides=list(overrides))


class _Tiny(L.LightningModule):
    """A linear model with ~260 kB of weights (big enough for a checkpoint to fill a small disk)."""

    def __init__(self, width: int = 256, lr: float = 0.05) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(width, width)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _loader(width: int = 256, batches: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(batches * 4, width, generator=g), torch.randn(batches * 4, width, generator=g)
    )
    return DataLoader(data, batch_size=4)


def _suite_trainer(root: Path, callbacks: list, max_epochs: int, **kwargs) -> L.Trainer:
    """A trainer from the suite's own trainer config (``conf/trainer/cpu.yaml``, plugins included)."""
    cfg = compose_train("experiment=tagger", f"hydra.run.dir={root}")
    return build(
        cfg.trainer,
        default_root_dir=str(root),
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=kwargs.pop("logger", False),
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


# ----------------------------------------------------------------------------- 1. run-dir collisions
def test_runs_started_in_the_same_second_get_different_dirs(monkeypatch):
    class Frozen(common.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2030, 1, 2, 3, 4, 5)

    monkeypatch.setattr(common, "datetime", Frozen)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    stamps = {common._run_stamp() for _ in range(20)}
    assert len(stamps) == 20 and all(s.startswith("2030-01-02_03-04-05_") for s in stamps)
    # inside SLURM: the job (array task) id, which every node shares and a requeue keeps
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert common._run_stamp() == "slurm-77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert common._run_stamp() == "slurm-70_3"


def test_a_run_dir_is_claimed_by_exactly_one_of_two_racing_runs(tmp_path):
    for attempt in range(5):
        folder = tmp_path / f"run{attempt}"
        outcomes = []
        barrier = threading.Barrier(8)

        def claim(folder=folder, outcomes=outcomes, barrier=barrier):
            barrier.wait()
            try:
                claim_dir(folder, reuse=False, what="run", key="run_dir")
                outcomes.append("won")
            except RunDirInUse as err:
                outcomes.append(str(err))

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("won") == 1, outcomes
        assert all("run_dir=" in o and "ckpt_path=last" in o for o in outcomes if o != "won")
    # an explicit resume takes the dir over; resuming a folder that does not exist is an error
    claim_dir(tmp_path / "run0", reuse=True, what="run", key="run_dir")
    with pytest.raises(RunDirInUse, match="no such folder"):
        claim_dir(tmp_path / "typo", reuse=True, what="run", key="run_dir")
    assert not (tmp_path / "typo").exists()


# ----------------------------------------------------------------------------- 2. atomic checkpoints
def test_every_trainer_config_writes_checkpoints_through_the_suite_checkpoint_io(tmp_path):
    for trainer in ("cpu", "ddp_cpu", "gpu", "ddp"):
        cfg = compose_train("experiment=tagger", f"trainer={trainer}")
        assert [p["_target_"] for p in cfg.trainer.plugins] == ["lit_modules.callbacks.AtomicCheckpointIO"]
    # set once in conf/trainer/default.yaml, which every trainer config extends; nothing replaces it
    setting = [p for p in Path(CONF).rglob("*.yaml") if "plugins:" in p.read_text()]
    assert setting == [Path(CONF, "trainer", "default.yaml")]
    trainer = _suite_trainer(tmp_path, [], 1)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.fixture
def small_disk(tmp_path):
    """Mount tmpfs file systems of a given size (root, Linux); unmounted afterwards."""
    mounted = []

    def mount(name: str, kib: int) -> Path:
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or 'not root'})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fill(folder: Path, leave_bytes: int) -> None:
    """Write a file that leaves about ``leave_bytes`` free on ``folder``'s file system."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))


def test_a_full_disk_keeps_the_previous_last_ckpt_loadable(tmp_path, small_disk, monkeypatch):
    disk = small_disk("runs", 1536)  # room for two checkpoints of ~260 kB, then filled
    local_tmp = tmp_path / "tmp"  # $TMPDIR on another file system: Lightning's default copies across
    local_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(local_tmp))
    last = ModelCheckpoint(
        dirpath=disk / "ckpt", filename="last", every_n_epochs=1, enable_version_counter=False
    )
    _suite_trainer(disk, [last], 1).fit(_Tiny(), _loader())
    good = torch.load(disk / "ckpt" / "last.ckpt", weights_only=False)
    size = (disk / "ckpt" / "last.ckpt").stat().st_size
    _fill(disk, size // 2)  # the next save cannot fit
    last = ModelCheckpoint(
        dirpath=disk / "ckpt", filename="last", every_n_epochs=1, enable_version_counter=False
    )
    with pytest.raises(OSError) as info:
        _suite_trainer(disk, [last], 2).fit(_Tiny(), _loader(), ckpt_path=str(disk / "ckpt" / "last.ckpt"))
    assert info.value.errno == errno.ENOSPC and "last.ckpt" in str(info.value)
    kept = torch.load(disk / "ckpt" / "last.ckpt", weights_only=False)  # intact, still epoch 1's
    assert kept["epoch"] == good["epoch"] == 0
    assert torch.equal(kept["state_dict"]["layer.weight"], good["state_dict"]["layer.weight"])
    assert not [p for p in (disk / "ckpt").iterdir() if p.name != "last.ckpt"]  # no temporary left


def test_a_small_tmpdir_does_not_stop_checkpointing(tmp_path, small_disk, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(small_disk("tmp", 64)))  # smaller than one checkpoint
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", every_n_epochs=1)
    _suite_trainer(tmp_path, [last], 2).fit(_Tiny(), _loader())
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["epoch"] == 1


def test_a_failed_checkpoint_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The same guarantee without a small disk: the write itself fails half-way (any platform)."""
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)

    def half_then_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(OSError, match=str(path)):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1 and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


# ----------------------------------------------------------------------------- 5. divergence
def test_a_non_finite_loss_stops_training_before_any_checkpoint_holds_it(tmp_path):
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", every_n_epochs=1)
    trainer = _suite_trainer(tmp_path, [last, NonFiniteLossGuard("fusion")], 3, log_every_n_steps=50)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(_Tiny(lr=1e38), _loader())
    err = info.value
    assert err.stage == "fusion" and err.epoch == 0 and 0 < err.step < 4 and not np.isfinite(err.loss)
    assert f"stage fusion: the training loss is not finite ({err.loss}) at step {err.step}" in str(err)
    assert not (tmp_path / "ckpt").exists()  # stopped at the end of epoch 0, before the checkpoint


def test_export_refuses_non_finite_weights(tmp_path):
    from experiments.export import export_model

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 2)

    module = Module()
    with torch.no_grad():
        module.net.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="not exporting.*net|weight"):
        export_model(module, None, {"_target_": "torch.nn.Linear"}, tmp_path / "export")
    assert not (tmp_path / "export" / "model.safetensors").exists()


# ----------------------------------------------------------------------------- 7. CSV after resume
def test_a_resumed_run_replaces_the_csv_rows_logged_after_its_checkpoint(tmp_path):
    def trainer(max_epochs):
        every = ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_top_k=-1, filename="e{epoch}", auto_insert_metric_name=False
        )
        logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="main")
        return _suite_trainer(
            tmp_path, [every, TrimResumedLogs()], max_epochs, logger=logger, log_every_n_steps=1
        )

    trainer(3).fit(_Tiny(), _loader())
    # the killed attempt: epochs 1 and 2 were logged after the checkpoint it is resumed from
    trainer(3).fit(_Tiny(), _loader(), ckpt_path=str(tmp_path / "ckpt" / "e0.ckpt"))
    with open(tmp_path / "csv" / "main" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [(r["step"], r["epoch"]) for r in rows if r["train/loss_step"]]
    assert len(steps) == len(set(steps)) == 12  # 3 epochs x 4 batches, each once
    epoch_rows = [r["epoch"] for r in rows if r["train/loss_epoch"]]
    assert epoch_rows == ["0", "1", "2"]


def test_a_sigterm_during_validation_lets_it_finish_and_the_resumed_run_validates_every_epoch(tmp_path):
    class Validated(_Tiny):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    class TermInSecondValidation(Callback):
        def on_validation_batch_start(self, trainer, *args):
            if trainer.current_epoch == 1 and not trainer.sanity_checking and not trainer.received_sigterm:
                os.kill(os.getpid(), signal.SIGTERM)  # what scancel sends, mid-validation

    def trainer(*callbacks):
        logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="main")
        return _suite_trainer(
            tmp_path,
            [SigtermCheckpoint(), TrimResumedLogs(), *callbacks],
            3,
            logger=logger,
            log_every_n_steps=1,
            num_sanity_val_steps=0,
        )

    with pytest.raises(SIGTERMException):
        trainer(TermInSecondValidation()).fit(Validated(), _loader(), _loader())
    (saved,) = tmp_path.glob("hpc_ckpt_*.ckpt")
    trainer().fit(Validated(), _loader(), _loader(), ckpt_path=str(saved))
    with open(tmp_path / "csv" / "main" / "metrics.csv", newline="") as f:
        validated = [(r["epoch"], r["step"]) for r in csv.DictReader(f) if r["val/loss"]]
    assert validated == [("0", "3"), ("1", "7"), ("2", "11")]  # each epoch's validation, once


def test_a_kill_while_the_csv_log_gains_a_column_loses_no_rows(tmp_path, monkeypatch):
    """A new column makes the writer rewrite metrics.csv; a kill during that rewrite (simulated: the
    row writer dies) must leave the rows logged before it on disk."""
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="main")
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    logger.save()
    path = tmp_path / "csv" / "main" / "metrics.csv"
    before = path.read_text()

    def killed(self, rows):
        raise KeyboardInterrupt("killed")

    logger.log_metrics({"val/loss": 0.5}, step=3)  # a new column: the file is rewritten
    monkeypatch.setattr(csv.DictWriter, "writerows", killed)
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    assert path.read_text() == before


# ----------------------------------------------------------------------------- 10. options checked early
def test_wrong_run_options_are_named_before_anything_is_built():
    cfg = compose_train("experiment=tagger", "data.batch_size=abc", "optimizer.lr=abc", "data.val_fraction=0")
    with pytest.raises(RunOptionError) as info:
        check_run_options(cfg, stage_configs(cfg))
    message = str(info.value)
    for expected in (
        "data.batch_size='abc': expected int",
        "optimizer.lr='abc': expected float",
        "data.val_fraction=0: expected a number strictly between 0 and 1",
    ):
        assert expected in message, message
    cfg = compose_train(
        "experiment=tagger", "stages.fusion.optimizer.lr=-1", "trainer.limit_train_batches=1.5"
    )
    with pytest.raises(RunOptionError) as info:
        check_run_options(cfg, stage_configs(cfg))
    assert "stages.fusion: optimizer.lr=-1: expected a number > 0" in str(info.value)
    assert "trainer.limit_train_batches=1.5" in str(info.value)
    cfg = compose_train("experiment=tagger_nuswide", "data.root=/nonexistent/NUS-WIDE")
    with pytest.raises(RunOptionError, match="data.root=/nonexistent/NUS-WIDE: no such folder"):
        check_run_options(cfg, stage_configs(cfg))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_the_shipped_synthetic_experiments_pass_the_checks(experiment):
    cfg = compose_train(f"experiment={experiment}")
    if cfg.data.get("synthetic") is not None:
        check_run_options(cfg, stage_configs(cfg))


# ----------------------------------------------------------------------------- 11. permissions
def test_outputs_follow_the_umask(tmp_path):
    from omegaconf import OmegaConf

    from experiments.common import save_resolved_config, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        save_resolved_config(OmegaConf.create({"seed": 1}), tmp_path / "config.yaml")
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, tmp_path / "ckpt" / "last.ckpt")
        cache.ensure_generated(
            tmp_path / "twin", generator="g", version=1, params={}, write=lambda d: _write_meta(d, "g")
        )
    finally:
        os.umask(old)
    for name in ("metrics.json", "config.yaml", "ckpt/last.ckpt", "twin/synthetic_meta.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((tmp_path / "twin").stat().st_mode) == 0o755


def _write_meta(folder: Path, generator: str) -> None:
    from datamodules.files import atomic_write_text

    atomic_write_text(
        folder / cache.META_FILE, json.dumps({"generator": generator, "version": 1, "params": {}})
    )


# ----------------------------------------------------------------------------- 12. killed twin generation
def test_the_next_generation_removes_what_a_killed_one_left(tmp_path):
    stale = [tmp_path / ".twin.tmp-abc123", tmp_path / ".twin.old-def456"]
    for folder in stale:
        folder.mkdir()
        (folder / "half.jpg").write_bytes(b"\xff\xd8")
    other = tmp_path / ".twin_other.tmp-xyz"  # another dataset's staging: not ours to touch
    other.mkdir()
    cache.ensure_generated(
        tmp_path / "twin", generator="g", version=1, params={}, write=lambda d: _write_meta(d, "g")
    )
    assert not any(p.exists() for p in stale) and other.exists()
    assert (tmp_path / "twin" / cache.META_FILE).is_file()


# ----------------------------------------------------------------------------- 14. the cheap image check
def test_a_jpeg_with_a_garbled_middle_passes_the_cheap_check_and_decodes_as_garbage(tmp_path):
    x = np.linspace(0, 255, 128, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(x[None, :], x[:, None], np.full((128, 128), 90, np.uint8)), -1)
    good = tmp_path / "good.jpg"
    Image.fromarray(pixels).save(good, quality=90)
    data = bytearray(good.read_bytes())
    start = data.index(b"\xff\xda")  # start of scan: the compressed pixels follow
    middle = start + (len(data) - start) // 2
    data[middle : middle + 64] = np.random.default_rng(0).integers(0, 0xFE, 64, dtype=np.uint8).tobytes()
    garbled = tmp_path / "garbled.jpg"
    garbled.write_bytes(bytes(data))
    assert image_is_readable(garbled)  # headers and end marker are intact
    with Image.open(garbled) as img:
        decoded = np.asarray(img.convert("RGB"), dtype=np.int16)  # no error ...
    with Image.open(good) as img:
        reference = np.asarray(img.convert("RGB"), dtype=np.int16)
    assert decoded.shape == reference.shape
    assert np.abs(decoded - reference).max() > 64  # ... but part of the picture is garbage


# ----------------------------------------------------------------------------- through the command line
def tagger_cli(synthetic_dir: Path, log_dir: Path, *extra: str) -> list[str]:
    return ["experiment=tagger", "export=false", *small_twin_overrides(synthetic_dir, log_dir), *extra]


@pytest.mark.slow
def test_sigterm_saves_the_stage_exits_143_and_the_sweep_says_which_jobs_did_not_run(tmp_path, synthetic_dir):
    args = tagger_cli(
        synthetic_dir,
        tmp_path,
        "run_stages=[image_cnn,tag_mlp]",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "stages.image_cnn.trainer.max_epochs=2",
        "stages.tag_mlp.trainer.max_epochs=6",
        "optimizer=adamw,sgd,adam",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.train", "-m", *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 400
    target = None
    while target is None and proc.poll() is None and time.time() < deadline:
        target = next(iter(tmp_path.glob("train/multiruns/tagger/*/0/checkpoints/tag_mlp/last.ckpt")), None)
        time.sleep(0.05)
    assert target is not None, "job 0 never reached its second stage"
    proc.send_signal(signal.SIGTERM)  # what scancel and a preemption send
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out[-4000:]
    sweep, job = target.parents[3], target.parents[2]
    assert not (job / "metrics.json").exists() and not (sweep / "1").exists()
    status = json.loads((job / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert f"run_dir={job} ckpt_path=last" in status["resume"] and "optimizer=adamw" in status["resume"]
    assert status["resume"] in out and "resume this run with" in out
    assert [j["overrides"][-1] for j in status["jobs_not_run"]] == ["optimizer=sgd", "optimizer=adam"]
    assert "2 job(s) did not run" in out and "#1:" in out and "#2:" in out
    assert list(job.glob("hpc_ckpt_*.ckpt"))  # the interrupted stage, where it stood

    # a new run is refused the interrupted run's dir; the resume command continues it
    refused = run_cli(
        "experiments.train", *tagger_cli(synthetic_dir, tmp_path), f"run_dir={job}", expect_failure=True
    )
    assert f"run_dir={job} already holds another run" in refused.stderr
    assert json.loads((job / "status.json").read_text())["status"] == "interrupted"
    subprocess.run(
        status["resume"], shell=True, cwd=PROJECT_ROOT, check=True, capture_output=True, timeout=600
    )
    summary = read_metrics(job)
    assert (
        summary["stages"]["image_cnn"]["global_step"] == 8
        and summary["stages"]["tag_mlp"]["global_step"] == 24
    )
    assert json.loads((job / "status.json").read_text())["status"] == "completed"
    with open(job / "csv" / "tag_mlp" / "metrics.csv", newline="") as f:
        rows = [(r["epoch"], r["step"]) for r in csv.DictReader(f) if r.get("val/loss")]
    assert rows == [(str(e), str(4 * e + 3)) for e in range(6)]  # every epoch's validation, once

    # the report lists what did not run under the table
    run_cli("experiments.report", str(sweep))
    report = (sweep / "report" / "report.md").read_text()
    assert "optimizer=sgd" in report and "not run" in report


@pytest.mark.slow
def test_a_diverging_run_stops_with_stage_step_and_loss_and_exports_nothing(tmp_path, synthetic_dir):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "experiments.train",
        "experiment=tagger",
        *small_twin_overrides(synthetic_dir, tmp_path),
        "run_stages=[image_cnn]",
        "optimizer=sgd",
        "optimizer.lr=1e30",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        f"run_dir={run_dir}",
        expect_failure=True,
    )
    assert "stage image_cnn: the training loss is not finite" in proc.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "diverged" and status["stage"] == "image_cnn" and status["epoch"] == 0
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "export").exists()
    for ckpt in run_dir.rglob("*.ckpt"):  # nothing saved holds the diverged weights
        state = torch.load(ckpt, weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


@pytest.mark.slow
def test_ckpt_path_last_that_finds_nothing_is_an_error(tmp_path, synthetic_dir):
    never = tmp_path / "never"  # no data is generated: the errors come first
    missing = run_cli(
        "experiments.train",
        *tagger_cli(never, tmp_path),
        f"run_dir={tmp_path / 'typo'}",
        "ckpt_path=last",
        expect_failure=True,
    )
    assert f"run_dir={tmp_path / 'typo'}: no such folder, so nothing to resume" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_cli(
        "experiments.train",
        *tagger_cli(never, tmp_path),
        f"run_dir={empty}",
        "ckpt_path=last",
        expect_failure=True,
    )
    assert "ckpt_path=last: nothing to resume" in nothing.stderr
    assert str(empty / "checkpoints" / "image_cnn" / "last.ckpt") in nothing.stderr
    assert not never.exists() and not list(empty.rglob("*.ckpt"))


@pytest.mark.slow
def test_wrong_options_stop_the_command_before_any_data(tmp_path):
    never = tmp_path / "never"
    proc = run_cli(
        "experiments.train",
        *tagger_cli(never, tmp_path),
        "data.batch_size=abc",
        "optimizer.lr=abc",
        "data.val_fraction=0",
        expect_failure=True,
    )
    for key in ("data.batch_size='abc'", "optimizer.lr='abc'", "data.val_fraction=0"):
        assert key in proc.stderr
    assert not never.exists()


@pytest.mark.slow
def test_predict_skips_unreadable_images_matches_tags_and_writes_atomically(tmp_path, synthetic_dir, caplog):
    from experiments import predict
    from experiments.export import export_model
    from experiments.stages import build_data_and_model

    cfg = compose_train("experiment=tagger", *small_twin_overrides(synthetic_dir, tmp_path))
    datamodule, model = build_data_and_model(cfg)
    export_model(model, datamodule, cfg.model.net, tmp_path / "export")  # untrained: outputs do not matter
    images = tmp_path / "photos"
    twin_images = sorted(Path(datamodule.root).rglob("*.jpg"))[:4]
    for source, name in zip(twin_images, ["a.jpg", "sub/b.jpg", "sub/c.jpg", "cut.jpg"]):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, images / name)
    cut = images / "cut.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # an interrupted download
    (images / "sub" / "broken.png").write_bytes(b"not an image at all")
    tags = tmp_path / "tags.jsonl"
    keys = ["sub/b.jpg", str((images / "a.jpg").resolve()), "c.jpg", "nope.jpg", "sub/missing.jpg"]
    tags.write_text("".join(json.dumps({"image": k, "tags": ["sky"]}) + "\n" for k in keys))
    out = tmp_path / "preds.jsonl"
    out.write_text("an earlier result\n")
    argv = [
        "--export",
        str(tmp_path / "export"),
        "--images",
        str(images),
        "--tags",
        str(tags),
        "--out",
        str(out),
    ]

    def fails_half_way(*args, **kwargs):
        yield {"image": "a.jpg"}
        raise RuntimeError("the predictor failed")

    real_loader = predict.load_predictor
    predict.load_predictor = lambda kind: fails_half_way
    try:
        with pytest.raises(RuntimeError, match="the predictor failed"):
            predict.main(argv)
    finally:
        predict.load_predictor = real_loader
    assert out.read_text() == "an earlier result\n"  # untouched by the failed run

    with caplog.at_level(logging.WARNING, logger="predict"):
        predict.main(argv)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["image"] for r in rows) == ["a.jpg", "sub/b.jpg", "sub/c.jpg"]
    assert "2 unreadable image(s) skipped, 3 to predict" in caplog.text
    assert str(cut) in caplog.text and str(images / "sub" / "broken.png") in caplog.text
    assert "2 tag key(s)" in caplog.text and "nope.jpg, sub/missing.jpg" in caplog.text
    matched, unmatched = predict.match_user_tags(
        predict.read_user_tags(tags), predict.readable_images(predict.list_images(images))[0], images
    )
    assert sorted(matched) == ["a.jpg", "sub/b.jpg", "sub/c.jpg"] and unmatched == keys[3:]

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no images under"):
        predict.main(["--export", str(tmp_path / "export"), "--images", str(tmp_path / "empty")])
