"""Export a trained network to one ``.safetensors`` file plus a small JSON that says how to rebuild
it (the network's Hydra config, the preprocessing, label names, prediction settings), and load it
back without Lightning, Hydra's config tree or the training code paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from datamodules.files import atomic_path
from experiments.common import write_json

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def export_model(module, datamodule, net_cfg: DictConfig, out_dir: Path) -> Path:
    """Write ``out_dir/model.safetensors`` (``module.net``'s state) and ``out_dir/model.json``;
    refuses (``ValueError``) weights that are not finite.

    The module and the datamodule contribute what a predictor needs through optional
    ``export_metadata()`` methods (prediction rule settings; label names and preprocessing).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in module.net.state_dict().items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ValueError(
            f"not exporting to {out_dir}: {len(broken)} weight tensor(s) hold NaN or infinite values "
            f"({', '.join(broken[:5])}); the training diverged"
        )
    with atomic_path(out_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"producer": "mmsuite"})
    spec = {
        "format": "mmsuite-export",
        "version": 1,
        "net": OmegaConf.to_container(net_cfg, resolve=True),
        "model": module.export_metadata() if hasattr(module, "export_metadata") else {},
        "data": datamodule.export_metadata() if hasattr(datamodule, "export_metadata") else {},
    }
    write_json(out_dir / SPEC, spec)
    return out_dir / WEIGHTS


def load_exported(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the exported network (eval mode) from a folder or its ``model.safetensors``."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    spec = json.loads((folder / SPEC).read_text())
    if spec.get("format") != "mmsuite-export":
        raise ValueError(f"{folder / SPEC} is not an export of this suite")
    net_cfg = dict(spec["net"])
    _drop_pretrained_weights(net_cfg)
    net = instantiate(net_cfg)
    net.load_state_dict(load_file(str(folder / WEIGHTS), device=map_location))
    return net.eval(), spec


def _drop_pretrained_weights(node: Any) -> None:
    """The export holds every weight: rebuilding must not fetch pretrained ones again."""
    if isinstance(node, dict):
        if "weights" in node and "_target_" in node:
            node["weights"] = None
        for value in node.values():
            _drop_pretrained_weights(value)
