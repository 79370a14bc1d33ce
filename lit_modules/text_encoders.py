"""Text encoders (and their tokenizers) by name, shared by the text models of the suite.

Two families, picked by one name in the config:

* ``bilstm`` (offline default): a :class:`WordVocabulary` built from the training texts (lower-cased
  word / ``#hashtag`` / ``@mention`` tokens, most frequent first, ``<pad>`` = 0 and ``<unk>`` = 1)
  + :class:`BiLSTMTextEncoder` (embeddings -> bidirectional LSTM -> max/mean pooling over tokens).
* any other name: a Hugging Face encoder loaded with ``AutoModel.from_pretrained(name)`` and its
  ``AutoTokenizer`` (a hub name such as ``bert-base-uncased``, online or pre-cached, or a local
  folder written by ``save_pretrained``); pooled as the first token (``cls``) or the masked mean.

Every tokenizer has ``encode(texts, max_length) -> (ids [n, L] long, mask [n, L] bool)`` and
``state()`` (what an exported model needs to tokenize again); every encoder has ``num_features``
and ``forward(ids, mask) -> [n, num_features]``. :class:`TokenBagEncoder` embeds a small bag of
ids (an event name, hashtags) by a masked mean of embeddings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

PAD, UNK = "<pad>", "<unk>"
_TOKEN = re.compile(r"[#@]?\w+", re.UNICODE)


def simple_tokens(text: str) -> list[str]:
    """Lower-cased word tokens; ``#hashtags`` and ``@mentions`` keep their sigil; URLs drop out
    as their pieces (``https``, ``t``, ``co`` ...) which the vocabulary's frequency cut handles."""
    return _TOKEN.findall(text.lower())


class WordVocabulary:
    """A word-level vocabulary built from training texts.

    Args:
        words: the vocabulary in id order, starting with ``<pad>`` and ``<unk>``.
    """

    def __init__(self, words: Sequence[str]) -> None:
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError("a WordVocabulary starts with <pad>, <unk>")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], max_size: int = 5000, min_freq: int = 1,
              tokenize=simple_tokens) -> WordVocabulary:
        """The ``max_size - 2`` most frequent tokens seen at least ``min_freq`` times (ties: alphabetical)."""
        counts = Counter(tok for text in texts for tok in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept[: max(0, max_size - 2)]])

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(t, 1) for t in tokens]

    def encode(self, texts: Sequence[str], max_length: int = 48) -> tuple[Tensor, Tensor]:
        rows = [self.ids(simple_tokens(t))[:max_length] or [1] for t in texts]
        length = max(len(r) for r in rows) if rows else 1
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row)
        return ids, ids > 0

    def state(self) -> dict[str, Any]:
        return {"kind": "word_vocabulary", "words": self.words}


class HFTokenizer:
    """``AutoTokenizer.from_pretrained(name)`` with the same ``encode``/``state`` interface."""

    def __init__(self, name: str) -> None:
        from transformers import AutoTokenizer

        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(name)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str], max_length: int = 48) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return enc["input_ids"].long(), enc["attention_mask"].bool()

    def state(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name}


def build_tokenizer(name: str, train_texts: Iterable[str] = (), vocab_size: int = 5000,
                    min_freq: int = 1) -> WordVocabulary | HFTokenizer:
    """The tokenizer that goes with :func:`build_text_encoder` ``name``: a vocabulary built from
    ``train_texts`` for the offline encoders, else the Hugging Face tokenizer of ``name``."""
    if name in OFFLINE_ENCODERS:
        return WordVocabulary.build(train_texts, max_size=vocab_size, min_freq=min_freq)
    return HFTokenizer(name)


class BiLSTMTextEncoder(nn.Module):
    """Embeddings + bidirectional LSTM; the sequence is pooled over its real (unmasked) tokens.

    Args:
        vocab_size: rows of the embedding table (id 0 is padding).
        embed_dim, hidden: embedding width and LSTM hidden size per direction.
        num_layers, dropout: LSTM depth and dropout on the embeddings.
        pooling: ``"max"`` or ``"mean"`` over tokens; ``num_features = 2 * hidden``.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden: int = 32, num_layers: int = 1,
                 dropout: float = 0.0, pooling: str = "max") -> None:
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
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(self.embedding(ids)), lengths, batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)  # packed: the backward direction starts at each text's last real token
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        m = mask.unsqueeze(-1).to(out.dtype)
        if self.pooling == "mean":
            return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        return out.masked_fill(m == 0, torch.finfo(out.dtype).min).amax(1).masked_fill(m.sum(1) == 0, 0.0)


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder (``AutoModel.from_pretrained(name)``) pooled to one vector.

    Args:
        name: hub name or local folder.
        pooling: ``"cls"`` (first token) or ``"mean"`` (masked mean).
        freeze: keep the pretrained weights fixed (the seed uses frozen ELMo features).
    """

    def __init__(self, name: str, pooling: str = "cls", freeze: bool = True) -> None:
        super().__init__()
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(name)
        self.pooling = pooling
        self.num_features = int(self.model.config.hidden_size)
        if freeze:
            self.model.requires_grad_(False)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class TokenBagEncoder(nn.Module):
    """Masked mean of embeddings of a bag of ids ``[n, K]`` (0 = padding): an event name (K = 1)
    or a tweet's hashtags. ``num_features = dim``."""

    def __init__(self, vocab_size: int, dim: int = 64) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.num_features = dim

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = ids > 0 if mask is None else mask
        m = mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        return (self.embedding(ids) * m).sum(1) / m.sum(1).clamp_min(1.0)


OFFLINE_ENCODERS = ("bilstm",)


def build_text_encoder(name: str = "bilstm", vocab_size: int = 5000, **kwargs: Any) -> nn.Module:
    """A text encoder by name: ``bilstm`` (kwargs of :class:`BiLSTMTextEncoder`) or a Hugging Face
    name/path (kwargs of :class:`HFTextEncoder`; ``vocab_size`` is ignored)."""
    if name == "bilstm":
        return BiLSTMTextEncoder(vocab_size=vocab_size, **kwargs)
    for key in ("embed_dim", "hidden", "num_layers", "dropout"):
        kwargs.pop(key, None)
    return HFTextEncoder(name, **kwargs)
