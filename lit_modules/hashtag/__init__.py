"""Hashtag scene classifier (seed 002): SUN397 scenes -> popular hashtags, TTA, abstaining."""

from lit_modules.hashtag.module import HashtagClassifier
from lit_modules.hashtag.networks import HashtagNet
from lit_modules.hashtag.tta import NormalizedAugment, implausible_tags, tta_probabilities

__all__ = ["HashtagClassifier", "HashtagNet", "NormalizedAugment", "implausible_tags", "tta_probabilities"]
