"""The multimodal multi-task network of seed 003: unimodal encoders -> fusion -> one head per task.

``V_i = enc_i(x_i)`` for every configured modality (``image``: an image backbone's pooled features,
:func:`lit_modules.backbones.build_image_classifier` with 0 outputs, seed: ImageNet InceptionV3;
``text``: a text encoder of :mod:`lit_modules.text_encoders`, seed: ELMo; ``extra``: a bag of ids,
an event name or the tweet's hashtags), aligned to one width ``D`` (``align="pad"``: zero padding to
the widest, as the seed; ``"project"``: a linear map per modality, for wide pretrained features),
fused by :mod:`lit_modules.graph_fusion.fusion` into ``G``, optionally passed through one shared
layer (``shared_hidden``: Linear + LeakyReLU, the "shared last layer" of GradNorm), then one linear
head per task with one logit per class (one-vs-rest).

The heads are linear on purpose: every fusion gets the same heads, so interactions between
modalities can only come from the fusion itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lit_modules.graph_fusion.fusion import GraphFusion, build_fusion

MODALITIES = ("image", "text", "extra")


class MultimodalMultiTaskNet(nn.Module):
    """Encoders + fusion + task heads.

    Args:
        tasks: task name -> number of classes (in head order).
        modalities: the inputs used, a subset of ``image``, ``text``, ``extra`` (N = its length).
        image_encoder, text_encoder, extra_encoder: modules with ``num_features`` (unused ones may be None).
        dim: the common width ``D`` (``align="project"``; with ``"pad"``, ``None`` = the widest encoder).
        align: ``"pad"`` or ``"project"``.
        fusion: arguments of :func:`~lit_modules.graph_fusion.fusion.build_fusion` (``kind`` + options).
        shared_hidden: width of an optional shared layer before the heads (``None``: none).
        freeze: encoders kept frozen (e.g. ``[image]`` for fixed pretrained features).
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        modalities: Sequence[str] = ("image", "text", "extra"),
        image_encoder: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        extra_encoder: nn.Module | None = None,
        dim: int | None = None,
        align: str = "pad",
        fusion: Mapping[str, Any] | None = None,
        shared_hidden: int | None = None,
        freeze: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.modalities = list(modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or len(self.modalities) < 2:
            raise ValueError(f"modalities must be >= 2 of {MODALITIES}, got {self.modalities}")
        given = {"image": image_encoder, "text": text_encoder, "extra": extra_encoder}
        missing = [m for m in self.modalities if given[m] is None]
        if missing:
            raise ValueError(f"no encoder for modalities {missing}")
        self.encoders = nn.ModuleDict({m: given[m] for m in self.modalities})
        self.frozen = [m for m in freeze if m in self.encoders]
        for m in self.frozen:
            self.encoders[m].requires_grad_(False)
        widths = [int(self.encoders[m].num_features) for m in self.modalities]
        if align == "pad":
            self.dim = int(dim or max(widths))
            if self.dim < max(widths):
                raise ValueError(f"align=pad needs dim >= the widest encoder ({max(widths)}), got {self.dim}")
            self.aligners = None
        elif align == "project":
            if not dim:
                raise ValueError("align=project needs dim")
            self.dim = int(dim)
            self.aligners = nn.ModuleDict(
                {m: nn.Linear(w, self.dim) for m, w in zip(self.modalities, widths)}
            )
        else:
            raise ValueError(f"align must be 'pad' or 'project', got {align!r}")
        fusion = dict(fusion or {"kind": "hierarchical_graph"})
        self.fusion_kind = fusion.pop("kind")
        self.fusion = build_fusion(self.fusion_kind, len(self.modalities), self.dim, **fusion)
        width = self.fusion.out_dim
        self.shared: nn.Module | None = None
        if shared_hidden:
            self.shared = nn.Sequential(nn.Linear(width, int(shared_hidden)), nn.LeakyReLU())
            width = int(shared_hidden)
        self.heads = nn.ModuleDict({t: nn.Linear(width, c) for t, c in self.tasks.items()})

    def train(self, mode: bool = True) -> MultimodalMultiTaskNet:
        super().train(mode)
        # Fixed feature extractors keep their batch-norm statistics and run without dropout, so they
        # give the same features in training as in evaluation (and as a precomputed feature cache).
        for m in self.frozen_modalities():
            self.encoders[m].eval()
        return self

    def frozen_modalities(self) -> list[str]:
        """Modalities whose encoder has nothing to train (``freeze`` or a frozen pretrained encoder):
        their features can be precomputed once (:mod:`datamodules.feature_cache`)."""
        return [
            m
            for m in self.modalities
            if m in self.frozen or not any(p.requires_grad for p in self.encoders[m].parameters())
        ]

    def encode_modality(self, modality: str, batch: Mapping[str, Tensor]) -> Tensor:
        """The encoder's output for one modality, before alignment (``[n, num_features]``)."""
        enc = self.encoders[modality]
        if modality == "image":
            return enc(batch["image"])
        if modality == "text":
            return enc(batch["text_ids"], batch.get("text_mask"))
        return enc(batch["extra_ids"])

    def encode(self, batch: Mapping[str, Tensor]) -> list[Tensor]:
        """The aligned unimodal vectors ``V_i`` (``[n, D]`` each), in ``modalities`` order.

        A batch that carries ``<modality>_features`` (precomputed by a frozen encoder) skips that encoder.
        """
        out = []
        for m in self.modalities:
            cached = batch.get(f"{m}_features")
            v = cached if cached is not None else self.encode_modality(m, batch)
            if self.aligners is not None:
                v = self.aligners[m](v)
            elif v.shape[-1] < self.dim:
                v = F.pad(v, (0, self.dim - v.shape[-1]))
            out.append(v)
        return out

    def head_weight(self, task: str) -> Tensor:
        return self.heads[task].weight

    def shared_weight(self) -> Tensor:
        if self.shared is None:
            raise ValueError("no shared last layer: set model.net.shared_hidden to use dbn layer=shared")
        return self.shared[0].weight

    def forward(self, batch: Mapping[str, Tensor], fusion_info: bool = False) -> dict[str, Any]:
        """``{"features": G, "logits": {task: [n, C]}}``; with ``fusion_info`` and a graph fusion also
        ``"fusion": {"weights", "similarities", ...}`` (the per-sample edge weights of every level)."""
        vectors = self.encode(batch)
        info = None
        if fusion_info and isinstance(self.fusion, GraphFusion):
            features, info = self.fusion(vectors, return_info=True)
        else:
            features = self.fusion(vectors)
        h = self.shared(features) if self.shared is not None else features
        out = {"features": features, "logits": {t: head(h) for t, head in self.heads.items()}}
        if info is not None:
            out["fusion"] = info
        return out
