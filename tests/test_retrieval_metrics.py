"""R@K / median rank of the COCO protocol on hand-made similarity matrices, against brute force."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_modules.metrics import CocoRetrievalMetrics, coco_1k_folds, coco_retrieval_metrics
from lit_modules.metrics.retrieval import METRIC_KEYS


def embeddings_for(scores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Image/caption embeddings whose cosine matrix is exactly ``scores`` (N x 5N, entries in [-1, 1]):
    images are the first N unit vectors, caption j is ``scores[:, j]`` plus a free coordinate that
    keeps its norm at 1."""
    n, m = scores.shape
    images = torch.cat([torch.eye(n), torch.zeros(n, 1)], dim=1).double()
    rest = np.sqrt(np.clip(1.0 - (scores**2).sum(axis=0), 0.0, None))
    assert ((scores**2).sum(axis=0) <= 1.0 + 1e-9).all()
    captions = torch.from_numpy(np.concatenate([scores.T, rest[:, None]], axis=1))
    return images, captions


def brute_force(scores: np.ndarray) -> dict[str, float]:
    """The VSE++ evaluation loop written out: argsort per query, ties resolved in index order."""
    n = scores.shape[0]
    i2t, t2i = [], []
    for i in range(n):
        rank = min(int((scores[i] > scores[i, j]).sum()) for j in range(5 * i, 5 * i + 5))
        i2t.append(rank + 1)
    for j in range(5 * n):
        t2i.append(int((scores[:, j] > scores[j // 5, j]).sum()) + 1)
    out = {}
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * (ranks <= k).mean()
        out[f"{name}_medr"] = float(np.floor(np.median(ranks - 1)) + 1)  # VSE++: 0-based ranks
    out["rsum"] = sum(out[f"{a}_r{k}"] for a in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def scaled(scores: np.ndarray) -> np.ndarray:
    """Scale a score pattern so every caption column has norm < 1 (ranks are unchanged)."""
    return scores / (np.abs(scores).sum(axis=0).max() + 1.0)


def test_perfect_retrieval() -> None:
    n = 4
    scores = np.zeros((n, 5 * n))
    for i in range(n):
        scores[i, 5 * i : 5 * i + 5] = 1.0
    out = coco_retrieval_metrics(*embeddings_for(scaled(scores)))
    assert out["i2t_r1"] == out["t2i_r1"] == 100.0
    assert out["rsum"] == 600.0 and out["i2t_medr"] == out["t2i_medr"] == 1.0


def test_reversed_retrieval_ranks_last() -> None:
    n = 12  # image i's captions score lowest for it: caption retrieval ranks them last
    scores = np.ones((n, 5 * n))
    for i in range(n):
        scores[i, 5 * i : 5 * i + 5] = 0.0
    out = coco_retrieval_metrics(*embeddings_for(scaled(scores)))
    assert out["i2t_r10"] == out["t2i_r10"] == 0.0
    assert out["i2t_medr"] == 5 * n - 5 + 1 and out["t2i_medr"] == n
    assert out == pytest.approx(brute_force(scaled(scores)))


def test_ties_count_for_the_query() -> None:
    n = 3
    scores = np.full((n, 5 * n), 0.5)  # every score tied: strict > gives rank 1 everywhere
    out = coco_retrieval_metrics(*embeddings_for(scaled(scores)))
    assert out["i2t_r1"] == out["t2i_r1"] == 100.0


def test_an_image_whose_second_caption_ranks_first() -> None:
    n = 3
    scores = np.zeros((n, 5 * n))
    scores[0, 1] = 3.0  # image 0: its second caption is the best of all: rank 1
    scores[0, 10] = 2.0  # ... and outscores caption 0..0 of its own except caption 1
    scores[1, 0:5] = 1.0  # image 1 prefers image 0's captions (ranks its own 6th)
    scores[2, 10:15] = 1.0
    s = scaled(scores)
    out = coco_retrieval_metrics(*embeddings_for(s))
    ref = brute_force(s)
    assert out == pytest.approx(ref)
    assert out["i2t_r1"] == pytest.approx(200 / 3)  # images 0 and 2 at rank 1, image 1 not


@pytest.mark.parametrize("count_span", [None, 7])
def test_random_matrices_match_brute_force_in_any_chunking(count_span, monkeypatch) -> None:
    if count_span:  # counts summed over short spans, as over 32,767 columns of a large test set
        monkeypatch.setattr("lit_modules.metrics.retrieval._INT16_SPAN", count_span)
    g = torch.Generator().manual_seed(0)
    images, captions = torch.randn(23, 8, generator=g), torch.randn(115, 8, generator=g)
    s = (
        (torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(captions, dim=1).T)
        .double()
        .numpy()
    )
    ref = brute_force(s)
    for chunk in (1, 5, 23, 100):
        assert coco_retrieval_metrics(images, captions, chunk_size=chunk) == pytest.approx(ref, abs=1e-4)


def test_median_rank_is_vsepps_for_even_counts() -> None:
    """VSE++'s ``floor(median(0-based ranks)) + 1``: ranks [1, 5] give 3 (not the lower middle, 1)."""
    from lit_modules.metrics.retrieval import _median

    assert _median(torch.tensor([1, 5])) == 3.0 and _median(torch.tensor([2, 5])) == 3.0
    g = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 10, 11, 500):
        ranks = g.integers(1, 40, size=n)
        assert _median(torch.from_numpy(ranks)) == np.floor(np.median(ranks - 1)) + 1
    # through the metric: 2 images, image 0 finds a caption of its own first,
    # image 1 its best 6th (median 3.5 -> 3)
    scores = np.zeros((2, 10))
    scores[0, 0] = 1.0
    scores[1, :4] = 1.0
    scores[1, 5:] = -1.0
    out = coco_retrieval_metrics(*embeddings_for(scaled(scores)))
    assert out["i2t_medr"] == 3.0 and out == pytest.approx(brute_force(scaled(scores)))
    g = torch.Generator().manual_seed(4)
    images, captions = torch.randn(24, 8, generator=g), torch.randn(120, 8, generator=g)
    s = (F.normalize(images, dim=1) @ F.normalize(captions, dim=1).T).double().numpy()
    assert coco_retrieval_metrics(images, captions) == pytest.approx(brute_force(s), abs=1e-4)


def test_wrong_caption_count_is_refused() -> None:
    with pytest.raises(ValueError, match="caption rows"):
        coco_retrieval_metrics(torch.randn(3, 4), torch.randn(14, 4))


def test_1k_protocol_averages_five_folds() -> None:
    g = torch.Generator().manual_seed(1)
    images, captions = torch.randn(50, 6, generator=g), torch.randn(250, 6, generator=g)
    out = coco_1k_folds(images, captions, folds=5, fold_size=10)
    folds = [
        coco_retrieval_metrics(images[10 * f : 10 * f + 10], captions[50 * f : 50 * f + 50]) for f in range(5)
    ]
    assert out == pytest.approx({k: np.mean([f[k] for f in folds]) for k in METRIC_KEYS})
    with pytest.raises(ValueError):
        coco_1k_folds(images, captions)  # 50 images are no 5 x 1,000


def test_metric_labels_the_5k_and_1k_protocols() -> None:
    """5,000 images: the whole-set scores are also ``5k_*`` (the COCO 5K test), the 5-fold average ``1k_*``;
    a smaller set (the twin's 200 test images) gets neither."""
    g = torch.Generator().manual_seed(5)
    images, captions = torch.randn(5000, 4, generator=g), torch.randn(25000, 4, generator=g)
    metric = CocoRetrievalMetrics()
    metric.update(images, captions)
    got = {k: float(v) for k, v in metric.compute().items()}
    assert all(got[f"5k_{k}"] == got[k] for k in METRIC_KEYS)
    assert {k[3:]: v for k, v in got.items() if k.startswith("1k_")} == pytest.approx(
        coco_1k_folds(images, captions)
    )
    small = CocoRetrievalMetrics()
    small.update(images[:200], captions[:1000])
    assert set(small.compute()) == set(METRIC_KEYS)


def test_metric_gathers_steps() -> None:
    g = torch.Generator().manual_seed(2)
    images, captions = torch.randn(10, 4, generator=g), torch.randn(50, 4, generator=g)
    metric = CocoRetrievalMetrics()
    metric.update(images[:4], captions[:20])
    metric.update(images[4:], captions[20:])
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got == pytest.approx(coco_retrieval_metrics(images, captions))


@pytest.mark.slow
def test_metric_on_two_processes(tmp_path) -> None:
    from tests.ddp import compute_on_ranks

    g = torch.Generator().manual_seed(3)
    images, captions = torch.randn(10, 4, generator=g), torch.randn(50, 4, generator=g)
    shards = [(images[:6], captions[:30]), (images[6:], captions[30:])]  # unequal shards, rows stay aligned
    expected = coco_retrieval_metrics(images, captions)
    for value in compute_on_ranks(partial(CocoRetrievalMetrics), shards, tmp_path):
        assert value == pytest.approx(expected, abs=1e-5)
