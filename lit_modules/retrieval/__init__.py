"""Cycle-consistent image-text embedder for cross-modal retrieval with partly paired data (seed 004)."""

from lit_modules.retrieval.module import TERMS, CycleRetrieval
from lit_modules.retrieval.networks import PARTS, CycleRetrievalNet

__all__ = ["PARTS", "TERMS", "CycleRetrieval", "CycleRetrievalNet"]
