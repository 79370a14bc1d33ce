"""Evaluation metrics of the lit modules."""

from lit_modules.metrics.average_precision import MultilabelMeanAveragePrecision, mean_average_precision
from lit_modules.metrics.multilabel import (
    SCORE_NAMES,
    MultilabelAnnotationMetrics,
    annotation_counts,
    annotation_scores_from_counts,
    multilabel_annotation_scores,
)
from lit_modules.metrics.multitask import MultiTaskScores, scores_from_confusion
from lit_modules.metrics.retrieval import CocoRetrievalMetrics, coco_1k_folds, coco_retrieval_metrics
from lit_modules.metrics.selective import (
    SelectivePredictions,
    confusion_scores,
    risk_coverage,
    row_normalize,
    selective_scores,
    threshold_for_precision,
)

__all__ = [
    "CocoRetrievalMetrics",
    "coco_1k_folds",
    "coco_retrieval_metrics",
    "SCORE_NAMES",
    "MultilabelAnnotationMetrics",
    "MultilabelMeanAveragePrecision",
    "MultiTaskScores",
    "scores_from_confusion",
    "mean_average_precision",
    "annotation_counts",
    "annotation_scores_from_counts",
    "multilabel_annotation_scores",
    "SelectivePredictions",
    "confusion_scores",
    "risk_coverage",
    "row_normalize",
    "selective_scores",
    "threshold_for_precision",
]
