"""The spread of a graph fusion's dynamic edge weights over an evaluation set, and its figure.

The seed's weights are per sample (block B's modality weights ``w_i``, eq. 1; the pair weights
``w_xy`` of every higher level, eq. 5, from the similarities ``S``, eq. 4). Whether they are dynamic in
practice is a measurement: :class:`EdgeWeightStats` keeps every sample's weights and similarities
(DDP: gathered over ranks) and reports, per node, the mean and the standard deviation across samples,
and per level the mean within-sample ratio of the largest to the smallest pair weight (1 = uniform).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


class EdgeWeightStats(Metric):
    """Per-sample edge weights of a :class:`~lit_modules.graph_fusion.fusion.GraphFusion` over an epoch.

    Args:
        names: the node names of every level (:func:`~lit_modules.graph_fusion.fusion.node_names`).
    """

    full_state_update = False

    def __init__(self, names: list[list[str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = [list(level) for level in names]
        self.last_tables: dict[str, Tensor] = {}  # of the last compute(): every rank's samples
        for k in range(len(self.names)):
            self.add_state(f"weights_{k}", default=[], dist_reduce_fx="cat")
            if k:
                self.add_state(f"similarity_{k}", default=[], dist_reduce_fx="cat")

    def update(self, info: dict[str, list[Tensor]]) -> None:
        """``info``: the fusion's ``return_info`` (``weights`` per level, ``similarities`` per level > 1)."""
        for k, w in enumerate(info["weights"]):
            getattr(self, f"weights_{k}").append(w.detach().float())
        for k, s in enumerate(info["similarities"], start=1):
            getattr(self, f"similarity_{k}").append(s.detach().float())

    def tables(self) -> dict[str, Tensor]:
        """``{"weights_<k>": [n, P_k], "similarity_<k>": [n, P_k]}`` over the epoch (all ranks)."""
        out = {}
        for k in range(len(self.names)):
            out[f"weights_{k}"] = dim_zero_cat(getattr(self, f"weights_{k}"))
            if k:
                out[f"similarity_{k}"] = dim_zero_cat(getattr(self, f"similarity_{k}"))
        return out

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        if not len(self.weights_0):
            return out
        tables = self.last_tables = {key: value.cpu() for key, value in self.tables().items()}
        for k, level in enumerate(self.names):
            w = tables[f"weights_{k}"]
            sd = w.std(0, unbiased=False)
            for j, name in enumerate(level):
                out[f"L{k + 1}/{name}/mean"] = w[:, j].mean()
                out[f"L{k + 1}/{name}/sd"] = sd[j]
            out[f"L{k + 1}/sd"] = sd.mean()
            if k:
                out[f"L{k + 1}/max_over_min"] = (w.max(1).values / w.min(1).values.clamp_min(1e-12)).mean()
                s = tables[f"similarity_{k}"]
                out[f"L{k + 1}/S_mean"] = s.mean()
                out[f"L{k + 1}/S_sd"] = s.std(unbiased=False)
        return {key: value.cpu() for key, value in out.items()}


def edge_weight_figure(tables: dict[str, Tensor], names: list[list[str]], title: str):
    """Box plots of every node's weights across samples, level by level, and of the similarities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"level {k + 1} weights", tables[f"weights_{k}"], names[k]) for k in range(len(names))]
    rows += [
        (f"level {k + 1} similarity S", tables[f"similarity_{k}"], names[k]) for k in range(1, len(names))
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 2.3 * len(rows)), squeeze=False)
    for ax, (label, values, labels) in zip(axes[:, 0], rows):
        ax.boxplot(values.cpu().numpy(), whis=(5, 95), showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, fontsize=7, ha="right")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} (boxes: quartiles, whiskers: 5-95 %)", fontsize=9)
    fig.tight_layout()
    return fig


def log_edge_weight_figure(trainer, stats: EdgeWeightStats, split: str) -> None:
    """Draw the figure of the last ``stats.compute()`` into ``<run>/figures/edge_weights_<split>.png``."""
    from lit_modules.figures import log_figure

    if not stats.last_tables:
        return
    path = Path(trainer.default_root_dir) / "figures" / f"edge_weights_{split}.png"
    fig = edge_weight_figure(stats.last_tables, stats.names, f"{split}: dynamic edge weights per sample")
    log_figure(trainer, fig, path, key=f"{split}/edge_weights")
