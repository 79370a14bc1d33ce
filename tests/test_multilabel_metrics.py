"""Tests of the multi-label annotation metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from functools import partial
from pathlib import Path

import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score
from torch import Tensor

from lit_modules.metrics import (
    SCORE_NAMES,
    MultilabelAnnotationMetrics,
    annotation_counts,
    annotation_scores_from_counts,
    multilabel_annotation_scores,
)
from lit_modules.metrics.multilabel import _safe_div
from tests.ddp import compute_on_ranks


def _hmean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def sklearn_scores(preds: Tensor, target: Tensor) -> dict[str, float]:
    """Independent reference: CP/CR/OP/OR from scikit-learn, the F1s by hand."""
    y_pred = preds.to(torch.int64).numpy()
    y_true = target.to(torch.int64).numpy()
    cp = precision_score(y_true, y_pred, average="macro", zero_division=0)
    cr = recall_score(y_true, y_pred, average="macro", zero_division=0)
    op = precision_score(y_true, y_pred, average="micro", zero_division=0)
    or_ = recall_score(y_true, y_pred, average="micro", zero_division=0)
    cf1, of1 = _hmean(cp, cr), _hmean(op, or_)
    assert of1 == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    return {"CP": cp, "CR": cr, "CF1": cf1, "OP": op, "OR": or_, "OF1": of1, "HF1": _hmean(cf1, of1)}


def as_floats(scores: dict[str, Tensor]) -> dict[str, float]:
    assert set(scores) == set(SCORE_NAMES)
    for name, value in scores.items():
        assert value.ndim == 0 and value.is_floating_point(), name
        assert not torch.isnan(value), name
        assert 0.0 <= value.item() <= 1.0, name
    return {name: value.item() for name, value in scores.items()}


def assert_scores(actual: Mapping[str, Tensor | float], expected: Mapping[str, float]) -> None:
    """``actual`` (tensors from the metric, or floats) equals ``expected`` up to float error."""
    if any(isinstance(v, Tensor) for v in actual.values()):
        actual = as_floats(actual)  # type: ignore[arg-type]
    assert dict(actual) == pytest.approx(dict(expected), abs=1e-6)


def metric_scores(preds: Tensor, target: Tensor, n_chunks: int = 1) -> dict[str, Tensor]:
    metric = MultilabelAnnotationMetrics(preds.shape[1])
    for p, t in zip(preds.tensor_split(n_chunks), target.tensor_split(n_chunks)):
        metric.update(p, t)
    return metric.compute()


def random_data(seed: int, n: int = 60, num_labels: int = 9) -> tuple[Tensor, Tensor]:
    """Sparse random labels with a class never predicted and a class without positives."""
    gen = torch.Generator().manual_seed(seed)
    target = (torch.rand(n, num_labels, generator=gen) < 0.25).long()
    preds = torch.where(torch.rand(n, num_labels, generator=gen) < 0.7, target, 1 - target)
    target[:, 0] = 0
    preds[:, 1] = 0
    return preds, target


# --------------------------------------------------------------------------- reference comparison


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_chunks", [1, 4, 7])
def test_matches_sklearn_random(seed: int, n_chunks: int) -> None:
    preds, target = random_data(seed)
    expected = sklearn_scores(preds, target)
    assert_scores(metric_scores(preds, target, n_chunks), expected)
    assert_scores(multilabel_annotation_scores(preds, target), expected)


@pytest.mark.parametrize("seed", range(3))
def test_matches_sklearn_dense(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    preds = torch.randint(0, 2, (33, 5), generator=gen)
    target = torch.randint(0, 2, (33, 5), generator=gen)
    assert_scores(metric_scores(preds, target, n_chunks=3), sklearn_scores(preds, target))


def test_hand_computed_example() -> None:
    preds = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 1, 0]])
    # Counts read off the matrices: (NI^c, NI^p, NI^g) per class.
    counts = [(1, 1, 2), (1, 2, 1), (2, 2, 3), (0, 1, 0)]

    def frac(num: int, den: int) -> Fraction:
        return Fraction(num, den) if den else Fraction(0)

    num_labels = len(counts)
    cp = sum(frac(c, p) for c, p, _ in counts) / num_labels
    cr = sum(frac(c, g) for c, _, g in counts) / num_labels
    tp, n_pred, n_true = (sum(col) for col in zip(*counts))
    op, or_ = frac(tp, n_pred), frac(tp, n_true)

    def hmean(a: Fraction, b: Fraction) -> Fraction:
        return 2 * a * b / (a + b) if a + b else Fraction(0)

    cf1, of1 = hmean(cp, cr), hmean(op, or_)
    expected = {"CP": cp, "CR": cr, "CF1": cf1, "OP": op, "OR": or_, "OF1": of1, "HF1": hmean(cf1, of1)}
    assert (cp, cr, op, or_) == (Fraction(5, 8), Fraction(13, 24), Fraction(2, 3), Fraction(2, 3))

    expected_float = {k: float(v) for k, v in expected.items()}
    assert_scores(metric_scores(preds, target), expected_float)
    assert_scores(metric_scores(preds, target, n_chunks=3), expected_float)
    assert_scores(sklearn_scores(preds, target), expected_float)


def test_cf1_is_not_mean_of_per_class_f1() -> None:
    preds = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 1, 0]])
    cf1 = multilabel_annotation_scores(preds, target)["CF1"].item()
    macro_f1 = f1_score(target.numpy(), preds.numpy(), average="macro", zero_division=0)
    assert not math.isclose(cf1, macro_f1, abs_tol=1e-3)


# --------------------------------------------------------------------------- edge cases


def test_class_without_positives_has_zero_recall() -> None:
    target = torch.tensor([[1, 0], [1, 0]])
    preds = torch.tensor([[1, 1], [1, 0]])
    scores = as_floats(metric_scores(preds, target))
    assert scores["CR"] == pytest.approx(0.5)  # class 1: 0/0 -> 0
    assert scores["CP"] == pytest.approx(0.5)  # class 1: 0/1
    assert_scores(scores, sklearn_scores(preds, target))


def test_class_never_predicted_has_zero_precision() -> None:
    target = torch.tensor([[1, 1], [1, 0]])
    preds = torch.tensor([[1, 0], [1, 0]])
    scores = as_floats(metric_scores(preds, target))
    assert scores["CP"] == pytest.approx(0.5)  # class 1: 0/0 -> 0
    assert scores["CR"] == pytest.approx(0.5)  # class 1: 0/1
    assert_scores(scores, sklearn_scores(preds, target))


@pytest.mark.parametrize("all_zero_target", [False, True])
def test_all_zero_predictions(all_zero_target: bool) -> None:
    _, target = random_data(0)
    if all_zero_target:
        target = torch.zeros_like(target)
    preds = torch.zeros_like(target)
    zeros = dict.fromkeys(SCORE_NAMES, 0.0)
    assert_scores(metric_scores(preds, target, n_chunks=3), zeros)
    assert_scores(sklearn_scores(preds, target), zeros)


def test_perfect_predictions() -> None:
    _, target = random_data(1)
    target[0] = 1  # every class has a positive
    assert_scores(metric_scores(target.clone(), target, n_chunks=2), dict.fromkeys(SCORE_NAMES, 1.0))


def test_perfect_predictions_with_empty_class() -> None:
    """A class without positives (hence never predicted) scores 0 in the class-wise means."""
    target = torch.tensor([[1, 0, 1], [0, 0, 1]])
    scores = as_floats(metric_scores(target.clone(), target))
    assert scores["CP"] == scores["CR"] == scores["CF1"] == pytest.approx(2 / 3)
    assert scores["OP"] == scores["OR"] == scores["OF1"] == pytest.approx(1.0)
    assert_scores(scores, sklearn_scores(target, target))


def test_single_sample() -> None:
    preds = torch.tensor([[1, 0, 1, 0, 0]])
    target = torch.tensor([[1, 1, 0, 0, 0]])
    scores = as_floats(metric_scores(preds, target))
    assert scores["OP"] == pytest.approx(0.5) and scores["OR"] == pytest.approx(0.5)
    assert_scores(scores, sklearn_scores(preds, target))


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.float64, torch.int32, torch.uint8])
def test_input_dtypes(dtype: torch.dtype) -> None:
    preds, target = random_data(3)
    expected = sklearn_scores(preds, target)
    assert_scores(metric_scores(preds.to(dtype), target.to(dtype), n_chunks=2), expected)
    assert_scores(metric_scores(preds.to(dtype), target.bool(), n_chunks=2), expected)


def test_empty_batch_is_a_no_op() -> None:
    preds, target = random_data(4)
    metric = MultilabelAnnotationMetrics(preds.shape[1])
    metric.update(preds, target)
    metric.update(preds[:0], target[:0])
    assert_scores(metric.compute(), sklearn_scores(preds, target))


def test_reset_and_state() -> None:
    preds, target = random_data(5)
    metric = MultilabelAnnotationMetrics(preds.shape[1])
    metric.update(1 - preds, target)
    metric.reset()
    metric.update(preds, target)
    tp, n_pred, n_true = annotation_counts(preds, target)
    for state, expected in ((metric.tp, tp), (metric.n_pred, n_pred), (metric.n_true, n_true)):
        assert state.dtype == torch.long
        assert torch.equal(state, expected)
    assert_scores(metric.compute(), sklearn_scores(preds, target))


# --------------------------------------------------------------------------- pure helpers


def test_safe_div() -> None:
    out = _safe_div(torch.tensor([1, 0, 3, 0]), torch.tensor([2, 0, 0, 5]))
    assert out.is_floating_point()
    assert torch.equal(out, torch.tensor([0.5, 0.0, 0.0, 0.0]))


def test_scores_from_counts() -> None:
    scores = annotation_scores_from_counts(
        torch.tensor([1, 0, 0]), torch.tensor([2, 0, 1]), torch.tensor([1, 1, 0])
    )
    cp, cr, op, or_ = 0.5 / 3, 1 / 3, 1 / 3, 0.5
    cf1, of1 = _hmean(cp, cr), _hmean(op, or_)
    expected = {"CP": cp, "CR": cr, "CF1": cf1, "OP": op, "OR": or_, "OF1": of1, "HF1": _hmean(cf1, of1)}
    assert_scores(scores, expected)
    assert_scores(
        annotation_scores_from_counts(*(torch.zeros(4, dtype=torch.long),) * 3),
        dict.fromkeys(SCORE_NAMES, 0.0),
    )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("preds", "target", "match"),
    [
        (torch.zeros(3, 4), torch.zeros(3, 5), "same shape"),
        (torch.zeros(3, 4), torch.zeros(2, 4), "same shape"),
        (torch.zeros(4), torch.zeros(4), r"\[batch, num_labels\]"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), r"\[batch, num_labels\]"),
        (torch.zeros(3, 5), torch.zeros(3, 5), "Expected 4 labels"),
        (torch.full((3, 4), 2), torch.zeros(3, 4), "`preds` must contain only 0/1"),
        (torch.full((3, 4), 0.5), torch.zeros(3, 4), "`preds` must contain only 0/1"),
        (torch.zeros(3, 4), -torch.ones(3, 4), "`target` must contain only 0/1"),
        (torch.zeros(3, 4), torch.full((3, 4), float("nan")), "`target` must contain only 0/1"),
    ],
)
def test_invalid_inputs_raise(preds: Tensor, target: Tensor, match: str) -> None:
    metric = MultilabelAnnotationMetrics(4)
    with pytest.raises(ValueError, match=match):
        metric.update(preds, target)


def test_functional_validates_values() -> None:
    with pytest.raises(ValueError, match="0/1"):
        multilabel_annotation_scores(torch.full((2, 3), 3), torch.zeros(2, 3))


@pytest.mark.parametrize("num_labels", [0, -1, 2.0])
def test_invalid_num_labels(num_labels: object) -> None:
    with pytest.raises(ValueError, match="num_labels"):
        MultilabelAnnotationMetrics(num_labels)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_ddp_sync_matches_single_process(tmp_path: Path) -> None:
    preds, target = random_data(7, n=11, num_labels=6)
    sizes = [7, 4]  # unequal shards
    shards = list(zip(preds.split(sizes), target.split(sizes)))
    ranked_scores = compute_on_ranks(partial(MultilabelAnnotationMetrics, 6), shards, tmp_path)

    expected = sklearn_scores(preds, target)
    single = as_floats(metric_scores(preds, target))
    assert_scores(single, expected)
    for ranked in ranked_scores:
        assert ranked == pytest.approx(single, abs=1e-6)
    # The per-shard scores differ from the global ones, so the sync was really needed.
    assert as_floats(metric_scores(*shards[1])) != pytest.approx(single, abs=1e-6)
