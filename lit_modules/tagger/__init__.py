"""Multi-label image tagger (seed 001): networks and LightningModule."""

from lit_modules.tagger.module import RULES, MultiLabelTagger, apply_rule
from lit_modules.tagger.networks import PARTS, LabelCountRegressor, LateFusion, TaggerNet, TagMLP

__all__ = [
    "PARTS",
    "RULES",
    "LabelCountRegressor",
    "LateFusion",
    "MultiLabelTagger",
    "TagMLP",
    "TaggerNet",
    "apply_rule",
]
