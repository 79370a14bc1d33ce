"""The relevance classifier of seed 000: a text encoder, masked mean pooling, dropout, one linear layer.

For a caption (+ class sentence) of tokens ``t_1 .. t_L`` with mask ``m_t`` (0 on padding) and the
encoder's last hidden states ``e_t``::

    h = sum_t m_t e_t / sum_t m_t          (mean pooling, padding excluded)
    z = W dropout_0.25(h) + b              (one linear layer to the C classes)
    P = sigmoid(z)  (seed; one-hot targets, BCE)   or   softmax(z)  (option; CE)
"""

from __future__ import annotations

from torch import Tensor, nn


class RelevanceNet(nn.Module):
    """Encoder (``forward(ids, mask) -> [n, d]``, masked-mean pooled, e.g.
    :func:`lit_modules.text_encoders.build_text_encoder` with ``pooling="mean"``) + dropout + linear.

    Args:
        text_encoder: the encoder module; its ``num_features`` is d.
        num_classes: C.
        dropout: the seed's 0.25.
    """

    def __init__(self, text_encoder: nn.Module, num_classes: int, dropout: float = 0.25) -> None:
        super().__init__()
        if getattr(text_encoder, "pooling", "mean") != "mean":
            raise ValueError("the relevance classifier pools by the masked mean (text_encoder.pooling: mean)")
        self.text_encoder = text_encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(text_encoder.num_features, num_classes)
        self.num_classes = num_classes

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Logits ``z [n, C]``."""
        return self.classifier(self.dropout(self.text_encoder(ids, mask)))
