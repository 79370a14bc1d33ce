"""Seed 000: a RoBERTa relevance filter for image captions (ImageNet-Captions + class descriptions)."""

from lit_modules.relevance.module import RelevanceClassifier
from lit_modules.relevance.networks import RelevanceNet
from lit_modules.relevance.predict import caption_probabilities
from lit_modules.relevance.rules import (
    NORMALIZATIONS,
    linear_normalise,
    rank_normalise,
    relevance_coefficients,
    rule_masks,
)

__all__ = [
    "RelevanceClassifier",
    "RelevanceNet",
    "caption_probabilities",
    "NORMALIZATIONS",
    "linear_normalise",
    "rank_normalise",
    "relevance_coefficients",
    "rule_masks",
]
from lit_modules.relevance.demo import CaptionedImageClassifier, ImageCaptionNet  # noqa: E402

__all__ += ["CaptionedImageClassifier", "ImageCaptionNet"]
