"""Cross-modal retrieval metrics of the MS-COCO protocol (image i owns captions 5i..5i+4).

For L2-normalised image embeddings ``v_i`` and caption embeddings ``t_j`` the score is the cosine
``s_ij = <v_i, t_j>``. With ``g(j) = j // 5`` the image of caption ``j``:

* caption retrieval (image query, ``i2t``): rank of image ``i`` is the 1-based rank of its *best*
  matching caption, ``r_i = 1 + #{j : s_ij > max_{k in 5i..5i+4} s_ik}``;
* image retrieval (caption query, ``t2i``): ``r_j = 1 + #{i : s_ij > s_g(j)j}``.

R@K is the percentage of queries with ``r <= K``; ``rsum`` adds the six recalls; ``medr`` is the
median rank. Ties count in the query's favour (strict ``>``), as in the VSE++ evaluation code where
``argsort`` places tied scores in index order. Everything is computed from row chunks of the
similarity matrix (``chunk x 5N`` at a time, one matrix product per chunk, no per-pair tensors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

CAPTIONS_PER_IMAGE = 5
RECALL_KS = (1, 5, 10)
METRIC_KEYS = (*(f"i2t_r{k}" for k in RECALL_KS), *(f"t2i_r{k}" for k in RECALL_KS), "rsum", "i2t_medr", "t2i_medr")


def retrieval_ranks(image_emb: Tensor, caption_emb: Tensor, chunk_size: int = 250) -> tuple[Tensor, Tensor]:
    """1-based ranks ``(i2t [N], t2i [5N])`` of the ground truth (see module doc)."""
    n = image_emb.shape[0]
    if caption_emb.shape[0] != CAPTIONS_PER_IMAGE * n:
        raise ValueError(f"expected {CAPTIONS_PER_IMAGE * n} caption rows for {n} images, got {caption_emb.shape[0]}")
    images = F.normalize(image_emb.float(), dim=1)
    captions = F.normalize(caption_emb.float(), dim=1)
    # s_g(j)j for every caption: the score image retrieval has to beat (no [5N, d] gather of the images).
    caption_gt = (captions.view(n, CAPTIONS_PER_IMAGE, -1) * images[:, None, :]).sum(dim=2).reshape(-1)
    i2t = torch.empty(n, dtype=torch.long, device=images.device)
    t2i_beaten = torch.zeros(CAPTIONS_PER_IMAGE * n, dtype=torch.long, device=images.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        scores = images[start:stop] @ captions.T  # [c, 5N]
        own = scores[:, CAPTIONS_PER_IMAGE * start: CAPTIONS_PER_IMAGE * stop]
        own = own.reshape(stop - start, stop - start, CAPTIONS_PER_IMAGE).diagonal(dim1=0, dim2=1).T  # [c, 5]
        best = own.max(dim=1, keepdim=True).values
        i2t[start:stop] = (scores > best).sum(dim=1) + 1
        beaten = scores > caption_gt
        # A caption's own image never beats it (the products above may round differently).
        rows = torch.arange(stop - start, device=images.device)[:, None]
        beaten[rows, CAPTIONS_PER_IMAGE * (start + rows) + torch.arange(CAPTIONS_PER_IMAGE, device=images.device)] = False
        t2i_beaten += beaten.sum(dim=0)
    return i2t, t2i_beaten + 1


def _median(ranks: Tensor) -> float:
    # The lower middle value for even counts, as numpy.floor(numpy.median(...)) on integer ranks.
    return float(ranks.float().median())


def coco_retrieval_metrics(image_emb: Tensor, caption_emb: Tensor, chunk_size: int = 250) -> dict[str, float]:
    """R@1/5/10 both ways (percent), ``rsum`` and median ranks for one fold.

    Args:
        image_emb: ``[N, d]`` image embeddings.
        caption_emb: ``[5N, d]`` caption embeddings, rows ``5i..5i+4`` belonging to image ``i``.
        chunk_size: image rows per similarity chunk (memory ``chunk_size x 5N`` floats).
    """
    i2t, t2i = retrieval_ranks(image_emb, caption_emb, chunk_size)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in RECALL_KS:
            out[f"{name}_r{k}"] = 100.0 * float((ranks <= k).float().mean())
    out["rsum"] = sum(out[f"{name}_r{k}"] for name in ("i2t", "t2i") for k in RECALL_KS)
    out["i2t_medr"], out["t2i_medr"] = _median(i2t), _median(t2i)
    return out


def coco_1k_folds(image_emb: Tensor, caption_emb: Tensor, folds: int = 5, fold_size: int = 1000) -> dict[str, float]:
    """The COCO 1K protocol: :func:`coco_retrieval_metrics` on ``folds`` consecutive blocks of
    ``fold_size`` images (and their ``5 * fold_size`` captions), averaged."""
    if image_emb.shape[0] < folds * fold_size:
        raise ValueError(f"the 1K protocol needs {folds * fold_size} images, got {image_emb.shape[0]}")
    per_fold = [
        coco_retrieval_metrics(image_emb[f * fold_size:(f + 1) * fold_size],
                               caption_emb[CAPTIONS_PER_IMAGE * f * fold_size:CAPTIONS_PER_IMAGE * (f + 1) * fold_size])
        for f in range(folds)
    ]
    return {key: sum(fold[key] for fold in per_fold) / folds for key in METRIC_KEYS}


class CocoRetrievalMetrics(Metric):
    """Gathers image and caption embeddings over steps (and DDP ranks: ``dist_reduce_fx="cat"``)
    and scores them with :func:`coco_retrieval_metrics` (plus the 1K protocol when
    ``five_fold`` and there are at least 5,000 images: keys ``1k_<key>``).

    ``update(image_emb [B, d], caption_emb [5B, d])``: each rank's rows stay aligned after the cat,
    so the ownership ``5i..5i+4`` holds whatever the sampler's order.
    """

    full_state_update = False

    def __init__(self, chunk_size: int = 250, five_fold: bool = True, **kwargs) -> None:
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
            scores.update({f"1k_{k}": v for k, v in coco_1k_folds(images, captions).items()})
        return {k: torch.tensor(v) for k, v in scores.items()}
