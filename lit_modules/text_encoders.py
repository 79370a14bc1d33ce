"""Text encoders by name, shared by the text models of the suite; their tokenizers (same names) are
preprocessing, in :mod:`datamodules.preprocessing.text`.

* ``bilstm`` (offline default): :class:`BiLSTMTextEncoder` (embeddings -> bidirectional LSTM ->
  max/mean pooling over tokens) over a word vocabulary of the training texts.
* ``roberta_small`` (offline default of the relevance filter): :class:`SmallRobertaEncoder`, a
  randomly initialised ``RobertaConfig`` model over a byte-level BPE trained in-process,
  masked-mean pooled.
* any other name: a Hugging Face encoder loaded with ``AutoModel.from_pretrained(name)`` (a hub name
  such as ``bert-base-uncased``, online or pre-cached, or a local folder written by
  ``save_pretrained``); pooled as the first token (``cls``) or the masked mean.

Every encoder has ``num_features`` and ``forward(ids, mask) -> [n, num_features]``.
:class:`TokenBagEncoder` embeds a small bag of ids (an event name, hashtags) by a masked mean of
embeddings.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over dimension 1 of ``values [n, L, d]`` over the positions where ``mask [n, L]`` is
    true (padding excluded): ``h = sum_t m_t e_t / max(1, sum_t m_t)``; an all-padding row gives 0."""
    m = mask.unsqueeze(-1).to(values.dtype)
    return (values * m).sum(1) / m.sum(1).clamp_min(1.0)


class BiLSTMTextEncoder(nn.Module):
    """Embeddings + bidirectional LSTM; the sequence is pooled over its real (unmasked) tokens.

    Args:
        vocab_size: rows of the embedding table (id 0 is padding).
        embed_dim, hidden: embedding width and LSTM hidden size per direction.
        num_layers, dropout: LSTM depth and dropout on the embeddings.
        pooling: ``"max"`` or ``"mean"`` over tokens; ``num_features = 2 * hidden``.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 64,
        hidden: int = 32,
        num_layers: int = 1,
        dropout: float = 0.0,
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if pooling not in ("max", "mean"):
            raise ValueError(f"pooling must be 'max' or 'mean', got {pooling!r}")
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True)
        self.pooling = pooling
        self.num_features = 2 * hidden

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = ids > 0 if mask is None else mask
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.dropout(self.embedding(ids)), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)  # packed: the backward direction starts at each text's last real token
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        m = mask.unsqueeze(-1).to(out.dtype)
        if self.pooling == "mean":
            return masked_mean(out, mask)
        return out.masked_fill(m == 0, torch.finfo(out.dtype).min).amax(1).masked_fill(m.sum(1) == 0, 0.0)


def load_without_pooler(name: str) -> nn.Module:
    """``AutoModel.from_pretrained(name)`` without the pooling head BERT-style models add on top
    (``add_pooling_layer=False``): the suite pools the last hidden states itself, so a pooler would
    get no gradient, and DDP stops on parameters without one. Models that have no such head load as
    they are."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(name, add_pooling_layer=False)
    except TypeError:  # the architecture takes no add_pooling_layer (it has no pooler)
        return AutoModel.from_pretrained(name)


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder (``AutoModel.from_pretrained(name)``) pooled to one vector.

    Args:
        name: hub name or local folder.
        pooling: ``"cls"`` (first token) or ``"mean"`` (masked mean).
        freeze: keep the pretrained weights fixed (the seed uses frozen ELMo features).
    """

    def __init__(self, name: str, pooling: str = "cls", freeze: bool = True) -> None:
        super().__init__()
        self.model = load_without_pooler(name)
        self.pooling = pooling
        self.num_features = int(self.model.config.hidden_size)
        if freeze:
            self.model.requires_grad_(False)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return masked_mean(hidden, mask)


class SmallRobertaEncoder(HFTextEncoder):
    """A randomly initialised RoBERTa (``RobertaConfig``) for offline runs, pooled like
    :class:`HFTextEncoder`; the tokenizer is a :class:`ByteLevelBPE` (pad id 1, RoBERTa's).

    Args:
        vocab_size: rows of the token embedding (at least the trained tokenizer's size).
        hidden, layers, heads, intermediate: width, depth, attention heads, feed-forward width.
        max_length: longest input in tokens (RoBERTa's positions start after the padding id).
        pooling: ``"mean"`` (masked) or ``"cls"``.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        intermediate: int = 128,
        max_length: int = 64,
        pooling: str = "mean",
        dropout: float = 0.1,
    ) -> None:
        nn.Module.__init__(self)
        from transformers import RobertaConfig, RobertaModel

        config = RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_length + 2,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        self.model = RobertaModel(config, add_pooling_layer=False)
        self.pooling = pooling
        self.num_features = hidden


class TokenBagEncoder(nn.Module):
    """Masked mean of embeddings of a bag of ids ``[n, K]`` (0 = padding): an event name (K = 1)
    or a tweet's hashtags. ``num_features = dim``."""

    def __init__(self, vocab_size: int, dim: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.num_features = dim

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = ids > 0 if mask is None else mask
        return masked_mean(self.embedding(ids), mask)


def build_text_encoder(name: str = "bilstm", vocab_size: int = 5000, **kwargs: Any) -> nn.Module:
    """A text encoder by name: ``bilstm`` (kwargs of :class:`BiLSTMTextEncoder`), ``roberta_small``
    (kwargs of :class:`SmallRobertaEncoder`) or a Hugging Face name/path (kwargs of
    :class:`HFTextEncoder`; ``vocab_size`` and the small models' size arguments are ignored)."""
    if name == "bilstm":
        return BiLSTMTextEncoder(vocab_size=vocab_size, **kwargs)
    if name == "roberta_small":
        kwargs.pop("freeze", None)
        return SmallRobertaEncoder(vocab_size=vocab_size, **kwargs)
    small_models = _parameters(BiLSTMTextEncoder) | _parameters(SmallRobertaEncoder)
    for key in small_models - _parameters(HFTextEncoder):
        kwargs.pop(key, None)
    return HFTextEncoder(name, **kwargs)


def _parameters(cls: type) -> set[str]:
    return set(inspect.signature(cls).parameters)
