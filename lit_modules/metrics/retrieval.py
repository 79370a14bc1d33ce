"""Cross-modal retrieval metrics of the MS-COCO protocol (image i owns captions 5i..5i+4).

For L2-normalised image embeddings ``v_i`` and caption embeddings ``t_j`` the score is the cosine
``s_ij = <v_i, t_j>``. With ``g(j) = j // 5`` the image of caption ``j``:

* caption retrieval (image query, ``i2t``): rank of image ``i`` is the 1-based rank of its *best*
  matching caption, ``r_i = 1 + #{j : s_ij > max_{k in 5i..5i+4} s_ik}``;
* image retrieval (caption query, ``t2i``): ``r_j = 1 + #{i : s_ij > s_g(j)j}``.

R@K is the percentage of queries with ``r <= K``; ``rsum`` adds the six recalls; ``medr`` is the
median rank as the VSE++ evaluation code computes it, ``floor(median(r - 1)) + 1`` over its 0-based
ranks, i.e. ``floor(median(r))``: for an even count the mean of the two middle ranks, rounded down
(ranks ``[1, 5]`` give 3). Ties count in the query's favour (strict ``>``); in the VSE++ code tied
scores fall in whatever order ``argsort`` gives them, which only matters for exactly equal scores.
Everything is computed from tiles of the similarity
matrix (``chunk x 5 chunk`` at a time, one matrix product per tile, no per-pair tensors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

CAPTIONS_PER_IMAGE = 5
RECALL_KS = (1, 5, 10)
METRIC_KEYS = (
    *(f"i2t_r{k}" for k in RECALL_KS),
    *(f"t2i_r{k}" for k in RECALL_KS),
    "rsum",
    "i2t_medr",
    "t2i_medr",
)


def _count_beaten(tile: Tensor, best: Tensor, caption_gt: Tensor, i2t: Tensor, t2i: Tensor) -> None:
    """Add one tile's counts: per image row, captions scoring above its best own caption; per
    caption column, images scoring above the caption's own image. Counting a bool mask through its
    uint8 view into int32 is several times faster on the CPU than ``bool.sum()`` (which widens every
    element to int64 first)."""
    i2t += (tile > best[:, None]).view(torch.uint8).sum(dim=1, dtype=torch.int32)
    t2i += (tile > caption_gt).view(torch.uint8).sum(dim=0, dtype=torch.int32)


def _product(images: Tensor, captions: Tensor, block: Tensor) -> Tensor:
    """``images @ captions.T``, written into ``block`` when the shapes match (full tiles)."""
    if block.shape == (images.shape[0], captions.shape[0]):
        return torch.matmul(images, captions.T, out=block)
    return images @ captions.T


def retrieval_ranks(image_emb: Tensor, caption_emb: Tensor, chunk_size: int = 500) -> tuple[Tensor, Tensor]:
    """1-based ranks ``(i2t [N], t2i [5N])`` of the ground truth (see module doc).

    The similarity matrix is visited in tiles of ``chunk_size`` images x ``5 * chunk_size``
    captions (a tile stays in the CPU's cache while it is counted). The diagonal tiles, which hold
    each image's own captions, go first: they give ``s_i,5i+k`` for every pair, so every score a
    count compares comes from the same matrix product (no rounding differences between a
    ground-truth score and the scores it is ranked against)."""
    n = image_emb.shape[0]
    if caption_emb.shape[0] != CAPTIONS_PER_IMAGE * n:
        raise ValueError(
            f"expected {CAPTIONS_PER_IMAGE * n} caption rows for {n} images, got {caption_emb.shape[0]}"
        )
    images = F.normalize(image_emb.float(), dim=1)
    captions = F.normalize(caption_emb.float(), dim=1)
    device, k = images.device, CAPTIONS_PER_IMAGE
    chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    best = torch.empty(n, device=device)  # max_k s_i,5i+k
    caption_gt = torch.empty(k * n, device=device)  # s_g(j)j
    i2t = torch.zeros(n, dtype=torch.int32, device=device)
    t2i = torch.zeros(k * n, dtype=torch.int32, device=device)
    block = torch.empty(min(chunk_size, n), k * min(chunk_size, n), device=device)  # reused by full tiles
    for start, stop in chunks:  # the diagonal tiles
        rows = stop - start
        tile = _product(images[start:stop], captions[k * start : k * stop], block)
        own = tile.view(rows, rows, k).diagonal(dim1=0, dim2=1).T  # own[r, c] = tile[r, 5r + c]
        caption_gt[k * start : k * stop] = own.reshape(-1)
        best[start:stop] = own.max(dim=1).values
        # own pairs count for neither side: no own score beats the best one or itself
        _count_beaten(
            tile,
            best[start:stop],
            caption_gt[k * start : k * stop],
            i2t[start:stop],
            t2i[k * start : k * stop],
        )
    for start, stop in chunks:  # every other tile
        for col_start, col_stop in chunks:
            if col_start == start:
                continue
            tile = _product(images[start:stop], captions[k * col_start : k * col_stop], block)
            _count_beaten(
                tile,
                best[start:stop],
                caption_gt[k * col_start : k * col_stop],
                i2t[start:stop],
                t2i[k * col_start : k * col_stop],
            )
    return i2t.long() + 1, t2i.long() + 1


def _median(ranks: Tensor) -> float:
    """VSE++'s ``numpy.floor(numpy.median(ranks0)) + 1`` on 0-based ranks, from the 1-based ``ranks``:
    the middle rank, or for an even count the two middle ranks' mean rounded down."""
    ordered = ranks.sort().values
    n = len(ordered)
    if n % 2:
        return float(ordered[n // 2])
    return float((ordered[n // 2 - 1] + ordered[n // 2]) // 2)


def coco_retrieval_metrics(image_emb: Tensor, caption_emb: Tensor, chunk_size: int = 500) -> dict[str, float]:
    """R@1/5/10 both ways (percent), ``rsum`` and median ranks for one fold.

    Args:
        image_emb: ``[N, d]`` image embeddings.
        caption_emb: ``[5N, d]`` caption embeddings, rows ``5i..5i+4`` belonging to image ``i``.
        chunk_size: image rows per similarity tile (tiles of ``chunk_size x 5 chunk_size`` floats).
    """
    i2t, t2i = retrieval_ranks(image_emb, caption_emb, chunk_size)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in RECALL_KS:
            out[f"{name}_r{k}"] = 100.0 * float((ranks <= k).float().mean())
    out["rsum"] = sum(out[f"{name}_r{k}"] for name in ("i2t", "t2i") for k in RECALL_KS)
    out["i2t_medr"], out["t2i_medr"] = _median(i2t), _median(t2i)
    return out


def coco_1k_folds(
    image_emb: Tensor, caption_emb: Tensor, folds: int = 5, fold_size: int = 1000
) -> dict[str, float]:
    """The COCO 1K protocol: :func:`coco_retrieval_metrics` on ``folds`` consecutive blocks of
    ``fold_size`` images (and their ``5 * fold_size`` captions), averaged."""
    if image_emb.shape[0] < folds * fold_size:
        raise ValueError(f"the 1K protocol needs {folds * fold_size} images, got {image_emb.shape[0]}")
    per_fold = [
        coco_retrieval_metrics(
            image_emb[f * fold_size : (f + 1) * fold_size],
            caption_emb[CAPTIONS_PER_IMAGE * f * fold_size : CAPTIONS_PER_IMAGE * (f + 1) * fold_size],
        )
        for f in range(folds)
    ]
    return {key: sum(fold[key] for fold in per_fold) / folds for key in METRIC_KEYS}


class CocoRetrievalMetrics(Metric):
    """Gathers image and caption embeddings over steps (and DDP ranks: ``dist_reduce_fx="cat"``)
    and scores them with :func:`coco_retrieval_metrics` on the whole set (keys ``<key>``), plus the
    1K protocol when ``five_fold`` and there are at least 5,000 images (keys ``1k_<key>``). With
    exactly 5,000 images (the Karpathy test split) the whole-set scores are the COCO 5K protocol and
    are also returned as ``5k_<key>``, so that reports can label them.

    ``update(image_emb [B, d], caption_emb [5B, d])``: each rank's rows stay aligned after the cat,
    so the ownership ``5i..5i+4`` holds whatever the sampler's order.
    """

    full_state_update = False

    def __init__(self, chunk_size: int = 500, five_fold: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chunk_size, self.five_fold = chunk_size, five_fold
        self.add_state("image_emb", default=[], dist_reduce_fx="cat")
        self.add_state("caption_emb", default=[], dist_reduce_fx="cat")

    def update(self, image_emb: Tensor, caption_emb: Tensor) -> None:
        self.image_emb.append(image_emb.detach().float())
        self.caption_emb.append(caption_emb.detach().float())

    def compute(self) -> dict[str, Tensor]:
        images, captions = dim_zero_cat(self.image_emb), dim_zero_cat(self.caption_emb)
        scores = coco_retrieval_metrics(images, captions, self.chunk_size)
        if self.five_fold and images.shape[0] >= 5000:
            if images.shape[0] == 5000:
                scores.update({f"5k_{k}": scores[k] for k in METRIC_KEYS})
            scores.update({f"1k_{k}": v for k, v in coco_1k_folds(images, captions).items()})
        return {k: torch.tensor(v) for k, v in scores.items()}
