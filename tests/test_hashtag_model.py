"""Hashtag classifier pieces on hand-made tensors: scores, abstaining, TTA, the inverse check."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from lit_modules.hashtag import HashtagNet, implausible_tags, tta_probabilities
from lit_modules.metrics import (
    SelectivePredictions,
    confusion_scores,
    risk_coverage,
    selective_scores,
    threshold_for_precision,
)


def test_confusion_scores_match_sklearn():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (300,), generator=g)
    pred = torch.where(torch.rand(300, generator=g) < 0.6, target, torch.randint(0, 6, (300,), generator=g))
    cm = torch.tensor(confusion_matrix(target, pred, labels=range(7)))  # classes 5, 6 absent from targets
    scores = confusion_scores(cm)
    assert scores["acc"].item() == pytest.approx(accuracy_score(target, pred), abs=1e-6)
    assert scores["balanced_acc"].item() == pytest.approx(balanced_accuracy_score(target, pred), abs=1e-6)


def test_risk_coverage_by_hand():
    conf = torch.tensor([0.9, 0.8, 0.8, 0.6, 0.5])
    correct = torch.tensor([True, True, False, True, False])
    curve = risk_coverage(conf, correct)
    assert curve["threshold"].tolist() == pytest.approx([0.9, 0.8, 0.6, 0.5])  # ties cut together
    assert curve["coverage"].tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    assert curve["precision"].tolist() == pytest.approx([1.0, 2 / 3, 3 / 4, 3 / 5])
    choice = threshold_for_precision(conf, correct, 0.7)
    assert choice == pytest.approx({"threshold": 0.6, "coverage": 0.8, "precision": 0.75})
    assert threshold_for_precision(conf, correct, 1.01)["threshold"] == float("inf")


def test_other_is_never_suggested():
    conf = torch.tensor([0.99, 0.7, 0.6])
    correct = torch.tensor([True, True, False])
    eligible = torch.tensor([False, True, True])  # the first is "other"
    assert selective_scores(conf, correct, 0.65, eligible) == {
        "coverage": pytest.approx(1 / 3),
        "precision": 1.0,
    }


@pytest.mark.parametrize("target", [0.6, 0.8, 0.9, 0.95])
def test_threshold_meets_target_precision_on_the_data_it_was_chosen_on(target):
    g = torch.Generator().manual_seed(1)
    n, c = 2000, 6
    logits = torch.randn(n, c, generator=g) * 2
    labels = torch.where(
        torch.rand(n, generator=g) < 0.7, logits.argmax(1), torch.randint(0, c, (n,), generator=g)
    )
    metric = SelectivePredictions()
    for chunk in range(0, n, 256):
        metric.update(logits[chunk : chunk + 256].softmax(1), labels[chunk : chunk + 256])
    state = metric.compute()
    correct = state["prediction"] == state["target"]
    eligible = state["prediction"] != c - 1
    choice = threshold_for_precision(state["confidence"], correct, target, eligible)
    scores = selective_scores(state["confidence"], correct, choice["threshold"], eligible)
    assert scores["precision"] >= target and scores["coverage"] == pytest.approx(choice["coverage"])
    # a lower threshold would miss the target or add nothing
    lower = state["confidence"][eligible & (state["confidence"] < choice["threshold"])]
    if lower.numel():
        assert (
            selective_scores(state["confidence"], correct, float(lower.max()), eligible)["precision"] < target
        )


def test_tta_averages_the_softmax_of_the_copies():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    images = torch.randn(3, 3, 4, 4)
    shifts = iter([0.5, -1.0, 2.0])

    def augment(x):
        return x + next(shifts)

    expected = sum(net(images + s).softmax(1) for s in (0.5, -1.0, 2.0)) / 3
    assert torch.allclose(tta_probabilities(net, images, augment, copies=3), expected, atol=1e-6)
    assert torch.allclose(tta_probabilities(net, images, None, copies=8), net(images).softmax(1))


def test_inverse_check_flags_implausible_user_tags():
    names = ["forest", "shopping", "sport", "other"]
    probs = torch.tensor([0.85, 0.01, 0.1, 0.04])
    checked, unknown = implausible_tags(probs, ["#forest", "Shopping", "sport", "love", "other"], names, 0.05)
    assert [(c["tag"], c["plausible"]) for c in checked] == [
        ("#forest", True),
        ("Shopping", False),
        ("sport", True),
    ]
    assert unknown == ["love", "other"]


def test_net_outputs_and_inception_aux_logits():
    net = HashtagNet("small_cnn", num_classes=7, width=8, depth=2)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    inception = HashtagNet("inception_v3", num_classes=7, aux_logits=True, init_weights=False)
    out = inception.train()(torch.randn(2, 3, 299, 299))
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 7)
    assert inception.eval()(torch.randn(1, 3, 299, 299)).shape == (1, 7)
