"""Seed 000's filter rules, rank normalisation, masked mean pooling and the weighted loss."""

import pytest
import torch

from lit_modules.losses import weighted_classification_loss
from lit_modules.relevance import (
    RelevanceClassifier,
    RelevanceNet,
    rank_normalise,
    relevance_coefficients,
    rule_masks,
)
from lit_modules.text_encoders import build_text_encoder, masked_mean


def test_rule_2_drops_below_the_mean():
    # p = 0.3 < mean 0.35 (rule 2) although a sigmoid row may sum above 1
    probs = torch.tensor([[0.3, 0.4, 0.35]])
    masks = rule_masks(probs, torch.tensor([0]))
    assert masks["below_mean"].tolist() == [True] and masks["keep"].tolist() == [False]


def test_rule_3_drops_below_half():
    probs = torch.tensor([[0.45, 0.05, 0.05], [0.6, 0.1, 0.1]])
    masks = rule_masks(probs, torch.tensor([0, 0]))
    assert masks["below_mean"].tolist() == [False, False]
    assert masks["below_min_prob"].tolist() == [True, False] and masks["keep"].tolist() == [False, True]
    keep, _ = relevance_coefficients(probs, torch.tensor([0, 0]), min_prob=0.4)
    assert keep.tolist() == [True, True]


def test_rule_4_keeps_with_raw_relevance_and_rule_5_normalises():
    # own-class p: 0.95, 0.6, 0.7, 0.6, 0.2 (dropped) -> r' = 1, 0.7, 0.8, 0.7
    # -> ranks (ties: larger) 4, 2, 3, 2 of 4
    probs = torch.tensor([[0.95, 0.0], [0.6, 0.1], [0.1, 0.7], [0.6, 0.0], [0.2, 0.9]])
    keep, coef = relevance_coefficients(probs, torch.tensor([0, 0, 1, 0, 0]))
    assert keep.tolist() == [True, True, True, True, False]
    assert coef.tolist() == pytest.approx([1.0, 0.5, 0.75, 0.5, 0.0])


def test_normalisation_all_above_threshold_single_and_empty():
    assert rank_normalise(torch.tensor([1.0, 1.0, 1.0])).tolist() == [1.0, 1.0, 1.0]
    keep, coef = relevance_coefficients(torch.tensor([[0.97, 0.1], [0.1, 0.93]]), torch.tensor([0, 1]))
    assert coef.tolist() == [1.0, 1.0]
    keep, coef = relevance_coefficients(torch.tensor([[0.55, 0.1]]), torch.tensor([0]))
    assert keep.tolist() == [True] and coef.tolist() == [1.0]
    keep, coef = relevance_coefficients(torch.tensor([[0.1, 0.9]]), torch.tensor([0]))
    assert keep.tolist() == [False] and coef.tolist() == [0.0]


def test_shift_and_saturation_are_keywords():
    probs = torch.tensor([[0.85, 0.0], [0.95, 0.0], [0.7, 0.0]])
    _, coef = relevance_coefficients(probs, torch.zeros(3, dtype=torch.long), saturate_above=0.8)
    assert coef.tolist() == pytest.approx([1.0, 1.0, 1 / 3])


def test_masked_mean_ignores_padding():
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert masked_mean(values, torch.tensor([[True, True, False]])).tolist() == [[2.0, 3.0]]
    assert masked_mean(values, torch.zeros(1, 3, dtype=torch.bool)).tolist() == [[0.0, 0.0]]


def small_net(num_classes=4):
    torch.manual_seed(0)
    return RelevanceNet(
        build_text_encoder(
            "roberta_small", vocab_size=40, hidden=16, layers=1, heads=2, intermediate=32, max_length=16
        ),
        num_classes,
    ).eval()


def test_relevance_net_output_does_not_depend_on_padding():
    net = small_net()
    ids = torch.tensor([[0, 7, 9, 2]])
    padded = torch.tensor([[0, 7, 9, 2, 1, 1, 1]])
    mask = torch.tensor([[True] * 4 + [False] * 3])
    with torch.no_grad():
        assert torch.allclose(net(ids, torch.ones_like(ids, dtype=torch.bool)), net(padded, mask), atol=1e-5)


def test_weighted_loss():
    logits, target = (
        torch.randn(5, 3, generator=torch.Generator().manual_seed(0)),
        torch.tensor([0, 1, 2, 0, 1]),
    )
    for kind in ("bce", "ce"):
        plain = weighted_classification_loss(logits, target, kind=kind)
        assert weighted_classification_loss(logits, target, torch.ones(5), kind=kind) == pytest.approx(
            plain.item()
        )
        w = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
        per_sample = torch.stack(
            [weighted_classification_loss(logits[i : i + 1], target[i : i + 1], kind=kind) for i in range(5)]
        )
        assert weighted_classification_loss(logits, target, w, kind=kind).item() == pytest.approx(
            (w * per_sample).mean().item()
        )
    assert weighted_classification_loss(logits, target, kind="ce").item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item()
    )
    with pytest.raises(ValueError, match="unknown classification loss"):
        weighted_classification_loss(logits, target, kind="focal")


def test_module_steps_and_accuracy_on_a_hand_batch():
    module = RelevanceClassifier(small_net(), activation="softmax", top_k=5)
    batch = {
        "ids": torch.tensor([[0, 5, 2], [0, 6, 2]]),
        "mask": torch.ones(2, 3, dtype=torch.bool),
        "labels": torch.tensor([1, 3]),
        "weight": torch.tensor([1.0, 0.0]),
    }
    logits = module(batch)
    assert logits.shape == (2, 4) and torch.isfinite(module.loss(logits, batch))
    module.accuracy["val"]["top5"].update(logits, batch["labels"])  # top-5 clipped to the 4 classes
    assert module.accuracy["val"]["top5"].compute().item() == 1.0
    assert module.export_metadata()["filter"] == {"min_prob": 0.5, "saturate_above": 0.9, "shift": 0.1}
    with pytest.raises(ValueError, match="activation"):
        RelevanceClassifier(small_net(), activation="tanh")


def test_linear_normalisation_is_affine_in_p_and_keeps_the_shift():
    # own-class p: 0.95 (saturated), 0.5, 0.7, 0.3 (dropped): r' = 1, 0.6, 0.8 -> (r' - 0.5) / 0.5
    probs = torch.tensor([[0.95, 0.0], [0.5, 0.1], [0.1, 0.7], [0.3, 0.0]])
    keep, coef = relevance_coefficients(probs, torch.tensor([0, 0, 1, 0]), normalize="linear")
    assert keep.tolist() == [True, True, True, False]
    assert coef.tolist() == pytest.approx([1.0, 0.2, 0.6, 0.0])
    with pytest.raises(ValueError, match="normalize"):
        relevance_coefficients(probs, torch.tensor([0, 0, 1, 0]), normalize="minmax")


def test_rank_normalisation_squeezes_the_unsaturated_when_most_saturate():
    """Ties at 1 take the top ranks: with 8 of 10 kept captions saturated, the other two get 1/10 and
    2/10 whatever their p, and p + shift changes nothing; the linear reading keeps them apart."""
    p = torch.tensor([0.99] * 8 + [0.55, 0.85])
    probs = torch.stack([p, 1 - p], dim=1)
    labels = torch.zeros(10, dtype=torch.long)
    _, rank = relevance_coefficients(probs, labels, normalize="rank")
    _, linear = relevance_coefficients(probs, labels, normalize="linear")
    assert rank.tolist() == pytest.approx([1.0] * 8 + [0.1, 0.2])
    assert linear.tolist() == pytest.approx([1.0] * 8 + [0.3, 0.9])
    _, no_shift = relevance_coefficients(probs, labels, normalize="rank", shift=0.0)
    assert no_shift.tolist() == rank.tolist()
