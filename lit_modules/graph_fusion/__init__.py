"""Hierarchical graph fusion + dynamic multi-task learning (seed 003): fusions, task weighting,
network and LightningModule."""

from lit_modules.graph_fusion.fusion import (
    FUSIONS,
    ConcatFusion,
    DynamicAttentionBlock,
    GraphFusion,
    TensorFusion,
    build_fusion,
    graph_levels,
)
from lit_modules.graph_fusion.module import MULTITASK_MODES, GraphFusionMultiTask
from lit_modules.graph_fusion.multitask import DynamicTaskWeights, min_norm_weights
from lit_modules.graph_fusion.networks import MultimodalMultiTaskNet

__all__ = [
    "FUSIONS",
    "MULTITASK_MODES",
    "ConcatFusion",
    "DynamicAttentionBlock",
    "DynamicTaskWeights",
    "GraphFusion",
    "GraphFusionMultiTask",
    "MultimodalMultiTaskNet",
    "TensorFusion",
    "build_fusion",
    "graph_levels",
    "min_norm_weights",
]
