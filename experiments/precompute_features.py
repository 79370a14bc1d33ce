"""Run an experiment's frozen encoders once over every split and write their features to disk.

    python -m experiments.precompute_features experiment=crisismmd_real data.root=/data/CrisisMMD \\
        data.features_dir=/data/features/crisismmd_inception_bert
    python -m experiments.train -m experiment=crisismmd_tables \\
        data.features_dir=/data/features/crisismmd_inception_bert

The experiment is composed exactly as ``experiments.train`` composes it (same seed, so a randomly
initialised frozen encoder is the same network), and the frozen modalities are those whose encoder
has nothing to train (``model.net.freeze`` or a frozen pretrained text encoder). The cache
(:mod:`datamodules.feature_cache`) records each encoder's fingerprint and the samples of each split;
training with ``data.features_dir`` refuses a cache that does not match. Without
``data.features_dir`` the cache goes to ``<paths.data_dir>/features/<experiment>-<fingerprint>``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from datamodules.feature_cache import encoder_fingerprint, write_feature_cache
from experiments.common import PROJECT_ROOT  # noqa: F401  (sets PROJECT_ROOT before Hydra resolves paths)
from experiments.stages import build_data_and_model, stage_configs

log = logging.getLogger(__name__)


@torch.no_grad()
def compute_features(
    net: torch.nn.Module, modalities: list[str], loader: DataLoader, device: torch.device
) -> dict[str, torch.Tensor]:
    """``{modality: [n, num_features]}`` from ``net.encode_modality`` in evaluation mode, in loader order."""
    net.eval().to(device)
    chunks: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        for m in modalities:
            chunks[m].append(net.encode_modality(m, batch).float().cpu())
    return {m: torch.cat(c) for m, c in chunks.items()}


def precompute(cfg: DictConfig) -> Path:
    name, cfg = stage_configs(cfg)[0]
    target = cfg.data.get("features_dir")
    with open_dict(cfg):
        cfg.data.features_dir = None
    datamodule, model = build_data_and_model(cfg)  # the order of a training stage: the same initialisation
    net = model.net
    if not hasattr(net, "frozen_modalities") or not hasattr(datamodule, "feature_datasets"):
        raise ValueError(f"{type(net).__name__} / {type(datamodule).__name__} do not support a feature cache")
    modalities = net.frozen_modalities()
    if not modalities:
        raise ValueError(
            "no frozen encoder in this experiment: freeze one (e.g. model.net.freeze=[image]) "
            "or use a frozen pretrained text encoder"
        )
    fingerprints = {m: encoder_fingerprint(net.encoders[m]) for m in modalities}
    if not target:
        tag = "-".join(fingerprints[m][:8] for m in modalities)
        target = Path(cfg.paths.data_dir) / "features" / f"{cfg.get('experiment_name') or 'run'}-{tag}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    features, keys = {}, {}
    start = time.perf_counter()
    for split, (split_keys, dataset) in datamodule.feature_datasets().items():
        loader = DataLoader(
            dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.get("num_workers", 0)
        )
        features[split], keys[split] = compute_features(net, modalities, loader, device), split_keys
        log.info("%s: %d samples", split, len(split_keys))
    encoders = {
        m: {
            "fingerprint": fingerprints[m],
            "encoder": OmegaConf.to_container(cfg.model.net.get(f"{m}_encoder", {}), resolve=True),
        }
        for m in modalities
    }
    dataset_info = {
        "target": cfg.data._target_,
        "root": str(cfg.data.root),
        "split_mode": cfg.data.get("split_mode"),
        "split_seed": cfg.data.get("split_seed"),
        "transforms": datamodule.transforms.describe() if hasattr(datamodule, "transforms") else None,
        "stage": name,
    }
    out = write_feature_cache(target, features, keys, encoders, dataset_info)
    log.info(
        "features of %s for %d samples in %.1f s -> %s",
        "/".join(modalities),
        sum(len(k) for k in keys.values()),
        time.perf_counter() - start,
        out,
    )
    log.info("train with: data.features_dir=%s", out)
    return out


@hydra.main(version_base="1.3", config_path="../conf", config_name="train.yaml")
def main(cfg: DictConfig) -> None:
    precompute(cfg)


if __name__ == "__main__":
    main()
