"""Multimodal fusion of N unimodal vectors: the seed's hierarchical graph fusion and its baselines.

All fusions take a list of N vectors ``V_i`` of one width ``D`` (``[n, D]`` each; the network
pads or projects the encoders' outputs to ``D`` first) and return ``[n, out_dim]``.

Hierarchical graph fusion (seed 003, eqs. 1-7), :class:`GraphFusion` with ``weighting="block"``:

* unimodal level: ``w_1 (+) ... (+) w_N = B(V_1 (+) ... (+) V_N)`` (eq. 1) with the dynamic attention
  block :class:`DynamicAttentionBlock`, ``G_uni = (1/N) sum_i w_i V_i`` (eq. 2);
* bimodal level: a node per unordered pair ``x < y``, ``V_(x,y) = NN(V_x (+) V_y)`` (eq. 3,
  :class:`PairNet`); ``S_xy = cos(softmax(V_x), softmax(V_y))`` (eq. 4);
  ``q_xy = (w_x + w_y) / (S_xy + delta)``, ``w_xy = softmax_pairs(q)`` (eq. 5);
  ``G_bi = sum w_xy V_(x,y)`` (eq. 6);
* trimodal level: the same formulas (4)-(6) over its nodes, each made by ``NN`` from two lower
  nodes ``a, b`` with their weights ``w_a, w_b`` from their own level: every pair of bimodal nodes
  and every bimodal node with the unimodal node it lacks (6 nodes for N = 3, as in the seed's Fig. 1);
* ``G = G_uni (+) G_bi (+) G_tri`` (eq. 7).

**N modalities.** Level ``k`` (``k = 2 .. min(N, max_level)``) holds a node for every unordered pair
``(a, b)`` of distinct nodes, ``a`` from level ``k - 1`` and ``b`` from any level below ``k``, whose
modality sets together cover exactly ``k`` modalities and neither of which contains the other. For
N = 2 this stops at the bimodal level (``out_dim = 2D``); for N = 3 it gives the seed's 3 + 6
nodes; for N = 4 the levels hold 6, 24 and (level 4) 312 nodes, so ``max_level``
(default 3) caps the hierarchy: N = 4 then gives ``G_uni (+) G_bi (+) G_tri`` over 4 + 6 + 24 nodes.

Choices where the seed is vague (all configurable):

* ``B``'s shapes: the N stacked vectors form a one-channel ``N x D`` image; Conv 5x5 (``block_channels``
  maps, zero padding 2) -> LeakyReLU -> Conv 1x1 (to one map) -> LeakyReLU gives an ``N x D`` map
  whose mean over ``D`` is one score per modality. ``block_activation``: ``none`` (default) takes these
  LeakyReLU scores as the weights, as the seed describes B (two conv layers and LeakyReLU, no output
  normalisation; eq. 2's ``1/N`` averages unnormalised weights); ``softmax`` over the modalities (weights
  sum to one) and ``sigmoid`` (independent, in (0, 1)) are options.
* No temperature anywhere: ``S`` is the cosine of the two softmaxed vectors exactly as eq. 4 has it
  (the seed names none); note that the cosine ignores the softmax's normaliser, so ``S`` depends on the
  spread of the vectors' values (and zero padding pulls it towards 1).
* ``NN`` (eq. 3): ``V_a`` and ``V_b`` are stacked as two channels of length ``D``; Conv1d
  (``pair_channels`` maps, kernel ``pair_kernel``, same padding) -> LeakyReLU -> flatten -> Linear to
  ``D`` -> LeakyReLU. One ``NN`` per level, shared by the level's nodes (``share_pair_net``).
* Bimodal nodes come from unordered pairs (the seed's Fig. 1 has 3 bimodal nodes for N = 3, although
  eq. 5's double sum runs over ``x != y``).

The graph fusion network the seed improves on (Mai et al., AAAI 2020) is the same hierarchy with
``weighting="linear"`` (each modality's weight ``sigmoid(s^T V_i + b)`` from one shared linear
scorer, no block B), ``similarity="dot"`` (dot product of the softmaxed vectors).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DynamicAttentionBlock(nn.Module):
    """Block B (eq. 1): per-sample modality weights ``[n, N]`` from the stacked vectors ``[n, N, D]``.

    See the module docstring for the shapes; ``activation`` is ``"none"`` (the seed's LeakyReLU
    scores), ``"softmax"`` or ``"sigmoid"``.
    """

    ACTIVATIONS = ("none", "softmax", "sigmoid")

    def __init__(
        self,
        channels: int = 8,
        kernel_size: int = 5,
        activation: str = "none",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {self.ACTIVATIONS}, got {activation!r}")
        self.conv5 = nn.Conv2d(1, channels, kernel_size, padding=kernel_size // 2)
        self.conv1 = nn.Conv2d(channels, 1, 1)
        self.activation = activation
        self.negative_slope = negative_slope

    def scores(self, stacked: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv5(stacked.unsqueeze(1)), self.negative_slope)
        return F.leaky_relu(self.conv1(h), self.negative_slope).squeeze(1).mean(-1)

    def forward(self, stacked: Tensor) -> Tensor:
        s = self.scores(stacked)
        if self.activation == "softmax":
            return s.softmax(-1)
        return s.sigmoid() if self.activation == "sigmoid" else s


class LinearScorer(nn.Module):
    """Mai et al.'s unimodal weights: ``sigmoid(s^T V_i + b)`` with one scorer shared by all modalities."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, stacked: Tensor) -> Tensor:
        return torch.sigmoid(self.linear(stacked)).squeeze(-1)


class PairNet(nn.Module):
    """``NN`` of eq. (3): two ``D``-vectors -> one ``D``-vector (Conv1d over the two stacked vectors,
    LeakyReLU, Linear, LeakyReLU). Works on ``[m, D]`` pairs at once."""

    def __init__(
        self, dim: int, channels: int = 8, kernel_size: int = 3, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, channels, kernel_size, padding=kernel_size // 2)
        self.fc = nn.Linear(channels * dim, dim)
        self.negative_slope = negative_slope

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv(torch.stack([a, b], dim=1)), self.negative_slope)
        return F.leaky_relu(self.fc(h.flatten(1)), self.negative_slope)


def pair_similarity(a: Tensor, b: Tensor, kind: str = "cosine") -> Tensor:
    """``S`` of eq. (4) between vectors ``[..., D]``: cosine (seed) or dot product (Mai et al.) of
    their softmaxes."""
    sa, sb = a.softmax(-1), b.softmax(-1)
    if kind == "cosine":
        return F.cosine_similarity(sa, sb, dim=-1)
    if kind == "dot":
        return (sa * sb).sum(-1)
    raise ValueError(f"unknown similarity {kind!r}")


def pair_weights(w_a: Tensor, w_b: Tensor, similarity: Tensor, delta: float = 0.5) -> Tensor:
    """Eq. (5): ``q = (w_a + w_b) / (S + delta)``, softmax over the last axis (the level's nodes)."""
    return ((w_a + w_b) / (similarity + delta)).softmax(-1)


@dataclass(frozen=True)
class Node:
    """A graph node: its level (1 = unimodal), index within the level, the modalities it covers and
    (above level 1) the two nodes it is made from."""

    level: int
    index: int
    modalities: frozenset[int]
    parents: tuple[tuple[int, int], tuple[int, int]] | None = None


def graph_levels(num_modalities: int, max_level: int = 3) -> list[list[Node]]:
    """The nodes of every level, following the rule of the module docstring."""
    levels = [[Node(1, i, frozenset([i])) for i in range(num_modalities)]]
    for k in range(2, min(num_modalities, max_level) + 1):
        below = [n for lv in levels for n in lv]
        seen: set[frozenset[tuple[int, int]]] = set()
        nodes: list[Node] = []
        for a in levels[-1]:
            for b in below:
                key = frozenset([(a.level, a.index), (b.level, b.index)])
                if a is b or key in seen:
                    continue
                union = a.modalities | b.modalities
                if len(union) != k or a.modalities <= b.modalities or b.modalities <= a.modalities:
                    continue
                seen.add(key)
                nodes.append(Node(k, len(nodes), union, ((a.level, a.index), (b.level, b.index))))
        levels.append(nodes)
    return levels


def node_names(levels: list[list[Node]], modalities: list[str]) -> list[list[str]]:
    """Readable names of every node, level by level: ``image``, ``image+text``, ``(image+text)x(extra)``."""
    names: list[list[str]] = [[modalities[next(iter(n.modalities))] for n in levels[0]]]
    for nodes in levels[1:]:
        level = []
        for n in nodes:
            (la, ia), (lb, ib) = n.parents
            a, b = names[la - 1][ia], names[lb - 1][ib]
            level.append(f"{a}+{b}" if la == lb == 1 else f"({a})x({b})")
        names.append(level)
    return names


class GraphFusion(nn.Module):
    """Hierarchical graph fusion (seed) or Mai et al.'s graph fusion network; see the module docstring.

    Args:
        num_modalities: N >= 2.
        dim: width D of every unimodal vector.
        max_level: highest level built (``min(N, max_level)`` levels; ``out_dim = levels * D``).
        weighting: ``"block"`` (dynamic attention block B, seed) or ``"linear"`` (shared sigmoid scorer, Mai).
        block_activation, block_channels, block_kernel: block B's choices.
        similarity: ``"cosine"`` (seed) or ``"dot"`` (Mai).
        delta: the similarity offset of eq. (5) (seed: 0.5).
        pair_channels, pair_kernel: ``NN``'s Conv1d.
        share_pair_net: one ``NN`` per level (True) or one per node.
    """

    def __init__(
        self,
        num_modalities: int,
        dim: int,
        max_level: int = 3,
        weighting: str = "block",
        block_activation: str = "none",
        block_channels: int = 8,
        block_kernel: int = 5,
        similarity: str = "cosine",
        delta: float = 0.5,
        pair_channels: int = 8,
        pair_kernel: int = 3,
        share_pair_net: bool = True,
    ) -> None:
        super().__init__()
        if num_modalities < 2:
            raise ValueError("graph fusion needs at least two modalities")
        self.num_modalities, self.dim, self.delta, self.similarity = num_modalities, dim, delta, similarity
        if weighting == "block":
            self.scorer: nn.Module = DynamicAttentionBlock(block_channels, block_kernel, block_activation)
        elif weighting == "linear":
            self.scorer = LinearScorer(dim)
        else:
            raise ValueError(f"weighting must be 'block' or 'linear', got {weighting!r}")
        self.levels = graph_levels(num_modalities, max_level)
        self.share_pair_net = share_pair_net
        self.pair_nets = nn.ModuleList()
        for nodes in self.levels[1:]:
            count = 1 if share_pair_net else len(nodes)
            self.pair_nets.append(
                nn.ModuleList(PairNet(dim, pair_channels, pair_kernel) for _ in range(count))
            )
        self.out_dim = dim * len(self.levels)

    def forward(self, vectors: list[Tensor], return_info: bool = False):
        if len(vectors) != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} modalities, got {len(vectors)}")
        stacked = torch.stack(vectors, dim=1)  # [n, N, D]
        w_uni = self.scorer(stacked)  # [n, N]
        node_vecs = [stacked]
        node_weights = [w_uni]
        fused = [(w_uni.unsqueeze(-1) * stacked).sum(1) / self.num_modalities]  # eq. (2)
        sims: list[Tensor] = []
        for k, nodes in enumerate(self.levels[1:], start=1):
            (la, ia), (lb, ib) = (
                [[p[side][0] - 1 for p in ps], [p[side][1] for p in ps]]
                for ps in [[n.parents for n in nodes]]
                for side in (0, 1)
            )
            va = torch.stack([node_vecs[lv][:, i] for lv, i in zip(la, ia)], 1)  # [n, P, D]
            vb = torch.stack([node_vecs[lv][:, i] for lv, i in zip(lb, ib)], 1)
            wa = torch.stack([node_weights[lv][:, i] for lv, i in zip(la, ia)], 1)  # [n, P]
            wb = torch.stack([node_weights[lv][:, i] for lv, i in zip(lb, ib)], 1)
            n, p, d = va.shape
            nets = self.pair_nets[k - 1]
            if self.share_pair_net:
                v = nets[0](va.reshape(n * p, d), vb.reshape(n * p, d)).view(n, p, d)
            else:
                v = torch.stack([nets[j](va[:, j], vb[:, j]) for j in range(p)], 1)
            s = pair_similarity(va, vb, self.similarity)  # eq. (4)
            w = pair_weights(wa, wb, s, self.delta)  # eq. (5)
            fused.append((w.unsqueeze(-1) * v).sum(1))  # eq. (6)
            node_vecs.append(v)
            node_weights.append(w)
            sims.append(s)
        out = torch.cat(fused, dim=-1)  # eq. (7)
        if return_info:
            return out, {"weights": node_weights, "nodes": node_vecs, "similarities": sims, "levels": fused}
        return out


class ConcatFusion(nn.Module):
    """Concatenation fusion: ``V_1 (+) ... (+) V_N`` (``out_dim = N D``)."""

    def __init__(self, num_modalities: int, dim: int) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.out_dim = num_modalities * dim

    def forward(self, vectors: list[Tensor]) -> Tensor:
        return torch.cat(vectors, dim=-1)


class TensorFusion(nn.Module):
    """Tensor fusion (Zadeh et al. 2017): each ``V_i`` projected to ``rank`` values ``z_i``, then the
    flattened outer product of ``[z_i; 1]`` over all modalities (``out_dim = (rank + 1)^N``), which
    holds every unimodal, bimodal ... N-modal product term."""

    def __init__(self, num_modalities: int, dim: int, rank: int = 8) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.projections = nn.ModuleList(nn.Linear(dim, rank) for _ in range(num_modalities))
        self.out_dim = (rank + 1) ** num_modalities

    def forward(self, vectors: list[Tensor]) -> Tensor:
        out = None
        for proj, v in zip(self.projections, vectors):
            z = F.pad(proj(v), (0, 1), value=1.0)
            out = z if out is None else (out.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        return out


FUSIONS = ("concat", "tensor", "graph", "hierarchical_graph")


def build_fusion(kind: str, num_modalities: int, dim: int, **kwargs) -> nn.Module:
    """A fusion by name: ``concat``, ``tensor`` (kwarg ``rank``), ``graph`` (Mai et al.) or
    ``hierarchical_graph`` (seed); graph kwargs are those of :class:`GraphFusion`. Arguments that
    belong to another kind are ignored, so one config node can hold them all."""
    if kind == "concat":
        return ConcatFusion(num_modalities, dim)
    if kind == "tensor":
        return TensorFusion(num_modalities, dim, rank=kwargs.get("rank", 8))
    graph_params = inspect.signature(GraphFusion).parameters
    graph_args = {k: v for k, v in kwargs.items() if k in graph_params}
    if kind == "graph":
        graph_args.update(weighting="linear", similarity="dot")
        return GraphFusion(num_modalities, dim, **graph_args)
    if kind == "hierarchical_graph":
        graph_args.setdefault("weighting", "block")
        graph_args.setdefault("similarity", "cosine")
        return GraphFusion(num_modalities, dim, **graph_args)
    raise ValueError(f"unknown fusion {kind!r}; use one of {FUSIONS}")
