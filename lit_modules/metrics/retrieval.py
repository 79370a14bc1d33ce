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
Everything is computed from blocks of the similarity
matrix (``chunk`` images at a time, no per-pair tensors).
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


#: Image rows per similarity block: 1,000-row products run at the speed of the full 5K product
#: (500-row ones took 1.4x the full product's time in ``python -m experiments.bench retrieval``).
DEFAULT_CHUNK = 1000
#: Longest span summed into int16 counts (no overflow).
_INT16_SPAN = torch.iinfo(torch.int16).max


def _count_above(scores: Tensor, threshold: Tensor, dim: int, out: Tensor) -> None:
    """``out += #{scores > threshold}`` along ``dim``. The bool mask is counted through its uint8 view
    into int16, spans of at most 32,767 at a time: on the CPU, 6x faster along columns and 2.5x along
    rows than into int32, and 5x than ``bool.sum()`` (int64)."""
    mask = (scores > threshold).view(torch.uint8)
    for start in range(0, mask.shape[dim], _INT16_SPAN):
        out += mask.narrow(dim, start, min(_INT16_SPAN, mask.shape[dim] - start)).sum(
            dim=dim, dtype=torch.int16
        )


def retrieval_ranks(
    image_emb: Tensor, caption_emb: Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[Tensor, Tensor]:
    """1-based ranks ``(i2t [N], t2i [5N])`` of the ground truth (see module doc).

    Two passes over blocks of ``chunk_size`` images. The first scores each block against its own
    ``5 * chunk_size`` captions (the diagonal tiles): they give ``s_i,5i+k`` for every pair, so every
    score a count compares comes from the same matrix products (no rounding differences between a
    ground-truth score and the scores it is ranked against). The second scores each block against
    every other caption, as two products (the captions before and after its own) written into one
    reused buffer: wide products run at the speed of the full ``N x 5N`` product, which square tiles
    do not. Memory: the buffer, ``chunk_size x 5N`` floats (100 MB for the 5K test), never the full
    matrix."""
    n = image_emb.shape[0]
    k = CAPTIONS_PER_IMAGE
    if caption_emb.shape[0] != k * n:
        raise ValueError(f"expected {k * n} caption rows for {n} images, got {caption_emb.shape[0]}")
    images = F.normalize(image_emb.float(), dim=1)
    captions = F.normalize(caption_emb.float(), dim=1)
    device = images.device
    chunk_size = max(1, min(chunk_size, n))
    chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
    best = torch.empty(n, device=device)  # max_k s_i,5i+k
    caption_gt = torch.empty(k * n, device=device)  # s_g(j)j
    i2t = torch.zeros(n, dtype=torch.int32, device=device)
    t2i = torch.zeros(k * n, dtype=torch.int32, device=device)
    for start, stop in chunks:  # the diagonal tiles
        rows = stop - start
        tile = images[start:stop] @ captions[k * start : k * stop].T
        own = tile.view(rows, rows, k).diagonal(dim1=0, dim2=1).T  # own[r, c] = tile[r, 5r + c]
        caption_gt[k * start : k * stop] = own.reshape(-1)
        best[start:stop] = own.max(dim=1).values
        # own pairs count for neither side: no own score beats the best one or itself
        _count_above(tile, best[start:stop, None], 1, i2t[start:stop])
        _count_above(tile, caption_gt[k * start : k * stop], 0, t2i[k * start : k * stop])
    buffer = torch.empty(max((b - a) * k * (n - b + a) for a, b in chunks), device=device)
    for start, stop in chunks:  # every other caption, before and after the block's own
        rows, used = stop - start, 0
        for col_start, col_stop in ((0, k * start), (k * stop, k * n)):
            width = col_stop - col_start
            if width == 0:
                continue
            scores = buffer[used : used + rows * width].view(rows, width)
            used += rows * width
            torch.matmul(images[start:stop], captions[col_start:col_stop].T, out=scores)
            _count_above(scores, best[start:stop, None], 1, i2t[start:stop])
            _count_above(scores, caption_gt[col_start:col_stop], 0, t2i[col_start:col_stop])
    return i2t.long() + 1, t2i.long() + 1


def _median(ranks: Tensor) -> float:
    """VSE++'s ``numpy.floor(numpy.median(ranks0)) + 1`` on 0-based ranks, from the 1-based ``ranks``:
    the middle rank, or for an even count the two middle ranks' mean rounded down."""
    ordered = ranks.sort().values
    n = len(ordered)
    if n % 2:
        return float(ordered[n // 2])
    return float((ordered[n // 2 - 1] + ordered[n // 2]) // 2)


def coco_retrieval_metrics(
    image_emb: Tensor, caption_emb: Tensor, chunk_size: int = DEFAULT_CHUNK
) -> dict[str, float]:
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

    def __init__(self, chunk_size: int = DEFAULT_CHUNK, five_fold: bool = True, **kwargs) -> None:
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
