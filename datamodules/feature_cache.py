"""Frozen-encoder features precomputed once to disk, so that sweeps over fusions, heads and losses
do not run a fixed encoder (e.g. ImageNet InceptionV3) over every image in every epoch of every run.

On disk, one folder per (dataset, frozen encoders)::

    <dir>/manifest.json          {"modalities": {name: {"dim", "fingerprint", "encoder"}},
                                  "splits": {split: {"count", "keys"}}, "dataset": ...}
    <dir>/<split>.safetensors    one float32 tensor [count, dim] per modality, rows in ``keys`` order

``keys`` are the dataset's sample identities (CrisisMMD: ``<tweet_id>/<image_id>``) in the order
the DataModule builds its splits; :meth:`FeatureCache.split` refuses a cache whose keys differ from
the data it serves, naming the split and the first differing sample, and :meth:`FeatureCache.by_keys`
serves any other partition of the cached samples (a run with another random split) and refuses one
with a sample the cache does not hold. ``fingerprint`` is a SHA-256 of the
encoder's parameters and buffers: the LightningModule refuses features computed by another encoder
(another pretrained checkpoint, or another seed of a randomly initialised one).

The features are computed with the evaluation transforms: training-time augmentation of a modality
whose features come from the cache is off (the seed's frozen InceptionV3 features had none either).
Written by ``python -m experiments.precompute_features``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from datamodules.errors import DatasetFormatError, read_json

MANIFEST = "manifest.json"


def encoder_fingerprint(module: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of every parameter and buffer of ``module``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").reshape(-1).contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class FeatureCache:
    """A loaded cache: ``features[split][modality]`` is ``[count, dim]``; ``manifest`` as on disk."""

    root: Path
    manifest: dict[str, Any]
    features: dict[str, dict[str, torch.Tensor]]
    _where: dict[str, tuple[str, int]] | None = None

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["modalities"])

    def fingerprint(self, modality: str) -> str:
        return self.manifest["modalities"][modality]["fingerprint"]

    def split(self, split: str, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The features of ``split``, after checking they belong to exactly these samples in this order."""
        if split not in self.features:
            raise DatasetFormatError(self.root / MANIFEST, f"no features for split {split!r}", field="splits")
        stored = self.manifest["splits"][split]["keys"]
        if list(stored) != list(keys):
            where = next(
                (i for i, (a, b) in enumerate(zip(stored, keys)) if a != b), min(len(stored), len(keys))
            )
            got = keys[where] if where < len(keys) else "<end>"
            want = stored[where] if where < len(stored) else "<end>"
            raise DatasetFormatError(
                self.root / MANIFEST,
                f"split {split!r} was computed for other samples ({len(stored)} cached, {len(keys)} in the "
                f"data; first difference at row {where}: cached {want!r}, data {got!r}); re-run "
                "experiments.precompute_features",
                field=f"splits.{split}.keys",
            )
        return self.features[split]

    def by_keys(self, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """The features of these samples from whichever split of the cache holds them, in ``keys``
        order: a run whose split differs from the one the cache was computed with (another
        ``split_seed``) uses the same cache, as long as every sample is in it."""
        if self._where is None:
            self._where = {
                key: (split, row)
                for split, info in self.manifest["splits"].items()
                for row, key in enumerate(info["keys"])
            }
        missing = [k for k in keys if k not in self._where]
        if missing:
            raise DatasetFormatError(
                self.root / MANIFEST,
                f"{len(missing)} of {len(keys)} samples are not in the cache (e.g. {missing[0]!r}; "
                f"{len(self._where)} cached); re-run experiments.precompute_features",
                field="splits",
            )
        out = {}
        for modality in self.modalities:
            first = next(iter(self.features.values()))[modality]
            table = first.new_empty((len(keys), first.shape[1]))
            for split, tensors in self.features.items():
                pairs = [(i, self._where[k][1]) for i, k in enumerate(keys) if self._where[k][0] == split]
                if pairs:
                    dst, src = torch.tensor(pairs).T
                    table[dst] = tensors[modality][src]
            out[modality] = table
        return out


def load_feature_cache(root: str | Path) -> FeatureCache:
    """Read a cache written by :func:`write_feature_cache`; format problems name the file and field."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DatasetFormatError(
            manifest_path,
            "no feature cache here; write one with "
            "`python -m experiments.precompute_features experiment=<name> data.features_dir=<dir>`",
        )
    manifest = read_json(manifest_path, "the cache's manifest")
    for key in ("modalities", "splits"):
        if not isinstance(manifest.get(key), dict) or not manifest[key]:
            raise DatasetFormatError(manifest_path, f"missing or empty {key!r}", field=key)
    features: dict[str, dict[str, torch.Tensor]] = {}
    for split, info in manifest["splits"].items():
        path = root / f"{split}.safetensors"
        if not path.is_file():
            raise DatasetFormatError(path, "feature file missing (the cache is incomplete)")
        tensors = load_file(str(path))
        for modality, spec in manifest["modalities"].items():
            t = tensors.get(modality)
            if t is None or tuple(t.shape) != (info["count"], spec["dim"]):
                shape = None if t is None else tuple(t.shape)
                raise DatasetFormatError(
                    path, f"expected a [{info['count']}, {spec['dim']}] tensor, got {shape}", field=modality
                )
        features[split] = tensors
    return FeatureCache(root, manifest, features)


def write_feature_cache(
    root: str | Path,
    features: Mapping[str, Mapping[str, torch.Tensor]],
    keys: Mapping[str, Sequence[str]],
    encoders: Mapping[str, Mapping[str, Any]],
    dataset: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``features[split][modality]`` atomically (a temporary folder renamed into place).

    Args:
        encoders: per modality ``{"fingerprint": ..., "encoder": <its config>}``.
        dataset: what the features were computed from (root, split mode, transforms), for the reader's eyes.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    modalities = {
        m: {"dim": int(next(iter(features.values()))[m].shape[1]), **dict(spec)}
        for m, spec in encoders.items()
    }
    manifest = {
        "modalities": modalities,
        "dataset": dict(dataset or {}),
        "splits": {s: {"count": len(keys[s]), "keys": list(keys[s])} for s in features},
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    tmp.chmod(0o755)
    try:
        for split, tensors in features.items():
            save_file(
                {m: t.detach().float().contiguous().cpu() for m, t in tensors.items()},
                str(tmp / f"{split}.safetensors"),
            )
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
