"""``gpu``: image-CNN training throughput on a GPU (bf16 autocast + channels_last, torch.compile as a
switch), the suite vs a bare loop with the same settings, and the share of the GPU's peak FLOP/s.

Models at the seeds' settings: the tagger's image CNN (ResNeXt101_32x8d, 224 px, stage image_cnn of
``tagger_nuswide``) and the hashtag classifier (ResNet34, 512 px, ``hashtag_sun397``), random
initialisation (throughput does not depend on the weights), one random batch resident on the device
for both loops (the data pipeline is the ``pipeline`` benchmark). Suite: ``trainer.fit`` with
``precision=bf16-mixed``, the ``ChannelsLast`` callback and ``compile`` from the config; bare: the same
module's ``training_step`` under ``torch.autocast(bfloat16)`` with the same optimizer, channels_last
and compiled parts.
FLOPs per image from ``torch.utils.flop_counter`` (forward + backward); peak dense bf16 FLOP/s by
device name (``--peak-tflops`` to give it). On a machine without a GPU it runs on the CPU (a smoke
run: the figures mean nothing there).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import lightning as L
import torch
from omegaconf import open_dict
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from datamodules.base import DataInfo
from experiments.bench.common import compose_experiment
from experiments.bench.overhead import _StepTimer, bare_loop
from experiments.stages import build_model, link_data
from lit_modules.callbacks import ChannelsLast, compile_children

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}

#: What the real datasets' DataModules publish (the sizes the models are built with; no data is read).
REAL_DATA = {
    "tagger_nuswide": DataInfo(
        label_names=[f"c{i}" for i in range(81)], tag_names=[f"t{i}" for i in range(1000)]
    ),
    "hashtag_sun397": DataInfo(label_names=[f"h{i}" for i in range(20)] + ["other"]),
}

MODELS = {
    # name: (experiment, overrides, image size, overrides of --tiny: a small CNN for a CPU smoke run)
    "resnext101_32x8d": (
        "tagger_nuswide",
        ["run_stages=[image_cnn]", "model.net.image_cnn.weights=null"],
        224,
        ["model.net.image_cnn.name=small_cnn"],
    ),
    "resnet34": ("hashtag_sun397", ["model.net.weights=null"], 512, ["model.net.backbone=small_cnn"]),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"of {list(MODELS)}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None, help="default: the seed's size per model")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the network's parts")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument(
        "--tiny", action="store_true", help="small CNNs instead (a smoke run of the benchmark)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every model")


def make_batch(experiment: str, n: int, size: int, cfg: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """A random batch in the experiment's DataModule format."""
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(n, 3, size, size, generator=g), "index": torch.arange(n)}
    if experiment.startswith("tagger"):
        net = cfg.model.net
        batch["tags"] = (torch.rand(n, int(net.num_tags), generator=g) < 0.01).float()
        batch["labels"] = (torch.rand(n, int(net.num_labels), generator=g) < 0.05).float()
    else:
        classes = int(cfg.model.net.num_classes) if "num_classes" in cfg.model.net else 21
        batch["label"] = torch.randint(0, classes, (n,), generator=g)
        batch["scene"] = batch["label"].clone()
    return {k: v.to(device) for k, v in batch.items()}


def flops_per_image(module: L.LightningModule, batch: dict[str, torch.Tensor], dtype: torch.dtype) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(batch["image"].device.type, dtype=dtype):
        module.training_step(batch, 0).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(batch["image"])


def bare_throughput(
    module: L.LightningModule, batch: dict[str, torch.Tensor], args: argparse.Namespace, dtype: torch.dtype
) -> float:
    wall, _ = bare_loop(module, [batch] * (args.warmup + args.steps), args.warmup, autocast=dtype)
    return args.steps * len(batch["image"]) / wall


def suite_throughput(
    module: L.LightningModule,
    batch: dict[str, torch.Tensor],
    args: argparse.Namespace,
    device: torch.device,
    channels_last: bool,
    root_dir: str,
) -> float:
    steps = args.warmup + args.steps
    timer = _StepTimer(args.warmup, steps - 1)
    callbacks = [timer] + ([ChannelsLast()] if channels_last else [])
    trainer = L.Trainer(
        default_root_dir=root_dir,
        accelerator=device.type,
        devices=1,
        precision="bf16-mixed",
        max_steps=steps,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    # The batch is already on the device, as in the bare loop: Lightning's transfer is then a no-op, and a
    # 200 MB host-to-device copy per step (64 x 512 px float32) does not count against the suite.
    trainer.fit(module, train_dataloaders=DataLoader([batch] * steps, batch_size=None))
    return args.steps * len(batch["image"]) / timer.seconds


def peak_tflops(args: argparse.Namespace) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def measure(model_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    experiment, overrides, size, tiny = MODELS[model_name]
    size = args.image_size or size
    cfg = compose_experiment(experiment, [*overrides, *(tiny if args.tiny else []), *args.overrides])
    with open_dict(cfg):
        cfg.compile = False
    link_data(cfg, REAL_DATA[experiment])
    L.seed_everything(0)
    model = build_model(cfg)
    batch = make_batch(experiment, args.batch_size, size, cfg, device)
    channels_last = not args.no_channels_last
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def fresh() -> L.LightningModule:
        m = copy.deepcopy(model)
        if args.compile:
            compile_children(m.net)
        return m

    flops = flops_per_image(copy.deepcopy(model).to(device), batch, torch.bfloat16)
    bare, suite = [], []
    for _ in range(args.repeats):
        bare.append(bare_throughput(fresh().to(device, memory_format=fmt), batch, args, torch.bfloat16))
        suite.append(suite_throughput(fresh(), batch, args, device, channels_last, cfg.paths.output_dir))
    bare_ips, suite_ips = statistics.median(bare), statistics.median(suite)
    peak = peak_tflops(args)
    achieved = suite_ips * flops / 1e12
    return {
        "model": model_name + (" (tiny: small_cnn)" if args.tiny else ""),
        "image_size": size,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "channels_last": channels_last,
        "bare_img_s": bare_ips,
        "suite_img_s": suite_ips,
        "suite_vs_bare_pct": 100.0 * suite_ips / bare_ips,
        "gflops_per_image": flops / 1e9,
        "achieved_tflops": achieved,
        "peak_share_pct": 100.0 * achieved / peak if peak else None,
        "bare_runs": bare,
        "suite_runs": suite,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = [measure(m, args, device) for m in args.models]
    notes = [
        "target: suite >= 90 % of the bare loop; peak share = achieved (forward + backward FLOPs x images/s) "
        "/ the device's dense bf16 peak"
    ]
    if device.type != "cuda":
        notes.append("no GPU here: a CPU smoke run, the figures say nothing about GPU throughput")
    return {
        "title": "training throughput, bf16 autocast"
        + (" + channels_last" if not args.no_channels_last else ""),
        "columns": [
            "model",
            "image_size",
            "batch_size",
            "compile",
            "bare_img_s",
            "suite_img_s",
            "suite_vs_bare_pct",
            "gflops_per_image",
            "achieved_tflops",
            "peak_share_pct",
        ],
        "rows": rows,
        "notes": notes,
        "settings": vars(args),
    }
