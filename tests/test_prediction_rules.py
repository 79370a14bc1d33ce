"""Prediction rules on the seed's own examples and on edge cases."""

import math

import pytest
import torch

from lit_modules.prediction_rules import counts_to_k, threshold_labels, top_k_labels


def test_threshold_matches_seed_example():
    # Seed §3.6: alpha = 0.5, [0.9, 0.6, 0.1, 0.4, 0.6] -> [1, 1, 0, 0, 1]
    probs = torch.tensor([[0.9, 0.6, 0.1, 0.4, 0.6]])
    assert threshold_labels(probs, 0.5).tolist() == [[1, 1, 0, 0, 1]]


def test_top_k_matches_seed_examples():
    # Seed §3.6: k = 4 -> [1, 1, 0, 1, 1];  k = 3 on [0.8, 0.9, 0.1, 0.3, 0.2] -> [1, 1, 0, 1, 0]
    assert top_k_labels(torch.tensor([[0.9, 0.6, 0.1, 0.4, 0.6]]), 4).tolist() == [[1, 1, 0, 1, 1]]
    assert top_k_labels(torch.tensor([[0.8, 0.9, 0.1, 0.3, 0.2]]), 3).tolist() == [[1, 1, 0, 1, 0]]


def test_top_k_per_sample_k():
    probs = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1], [0.5, 0.4, 0.6]])
    out = top_k_labels(probs, torch.tensor([1, 2, 3]))
    assert out.tolist() == [[0, 1, 0], [1, 1, 0], [1, 1, 1]]


def test_top_k_exact_count_with_ties_and_clamping():
    probs = torch.full((4, 6), 0.5)
    out = top_k_labels(probs, torch.tensor([0, 2, 6, 10]))
    assert out.sum(dim=1).tolist() == [0, 2, 6, 6]
    # ties go to the lowest index first
    assert out[1].tolist() == [1, 1, 0, 0, 0, 0]


def test_top_k_random_matches_torch_topk():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(50, 81, generator=g)
    out = top_k_labels(probs, 3)
    expected = torch.zeros_like(out).scatter_(1, probs.topk(3, dim=1).indices, 1)
    assert torch.equal(out, expected)


def test_counts_to_k_rounds_and_clamps():
    counts = torch.tensor([-1.0, 0.2, 0.6, 2.5, 3.49, 100.0])
    assert counts_to_k(counts, min_k=1, max_k=81).tolist() == [1, 1, 1, 2, 3, 81]
    assert counts_to_k(counts, min_k=0).tolist()[:3] == [0, 0, 1]


def test_empty_batch():
    assert top_k_labels(torch.zeros(0, 5), 3).shape == (0, 5)


def test_count_roundings_match_python():
    counts = [-0.5, 0.5, 1.5, 2.5, 2.49, 2.51, 3.0, 7.5, 12.2]
    reference = {
        "half_even": round,  # Python rounds halves to even, as torch.round
        "half_up": lambda x: math.floor(x + 0.5),
        "floor": math.floor,
        "ceil": math.ceil,
    }
    for rounding, by_hand in reference.items():
        got = counts_to_k(torch.tensor(counts), min_k=0, rounding=rounding).tolist()
        assert got == [max(0, by_hand(c)) for c in counts], rounding
    with pytest.raises(ValueError, match="rounding"):
        counts_to_k(torch.tensor([1.0]), rounding="stochastic")
