"""Text encoders (and their tokenizers) by name, shared by the text models of the suite.

Two families, picked by one name in the config:

* ``bilstm`` (offline default): a :class:`WordVocabulary` built from the training texts (lower-cased
  word / ``#hashtag`` / ``@mention`` tokens, most frequent first, ``<pad>`` = 0 and ``<unk>`` = 1)
  + :class:`BiLSTMTextEncoder` (embeddings -> bidirectional LSTM -> max/mean pooling over tokens).
* ``roberta_small`` (offline default of the relevance filter): a byte-level BPE tokenizer trained
  in-process on the training texts (:class:`ByteLevelBPE`, saved with the run through ``state()``)
  + :class:`SmallRobertaEncoder` (a randomly initialised ``RobertaConfig`` model), masked-mean pooled.
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
    def build(
        cls, texts: Iterable[str], max_size: int = 5000, min_freq: int = 1, tokenize=simple_tokens
    ) -> WordVocabulary:
        """The ``max_size - 2`` most frequent tokens seen at least ``min_freq`` times (ties: alphabetical)."""
        counts = Counter(tok for text in texts for tok in tokenize(text))
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept[: max(0, max_size - 2)]])

    def __len__(self) -> int:
        return len(self.words)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(t, 1) for t in tokens]

    def encode(
        self, texts: Sequence[str], max_length: int = 48, keep_end: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(ids [n, L], mask [n, L])``, each text cut to its first ``max_length`` tokens (its last
        with ``keep_end``), padded with 0."""
        rows = []
        for text in texts:
            ids = self.ids(simple_tokens(text))
            rows.append((ids[-max_length:] if keep_end else ids[:max_length]) or [1])
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

    @property
    def pad_id(self) -> int:
        """The id batches are padded with (RoBERTa: 1; its positions skip it)."""
        return int(self.tokenizer.pad_token_id or 0)

    def encode(
        self, texts: Sequence[str], max_length: int = 48, keep_end: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(ids, mask)`` padded to the longest text; a longer text loses its end (its start with
        ``keep_end``), special tokens kept."""
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left" if keep_end else "right"
        try:
            enc = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        finally:
            self.tokenizer.truncation_side = side
        return enc["input_ids"].long(), enc["attention_mask"].bool()

    def state(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name}


class ByteLevelBPE(HFTokenizer):
    """A RoBERTa-style byte-level BPE tokenizer trained in-process with the ``tokenizers`` library.

    Special tokens in RoBERTa's order: ``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2, ``<unk>`` = 3,
    ``<mask>`` = 4; texts are encoded as ``<s> ... </s>``. The Hugging Face wrapper is built from the
    trained tokenizer *object* (``PreTrainedTokenizerFast(tokenizer_object=...)``): in transformers 5
    the v4-style ``RobertaTokenizer(vocab_file=..., merges_file=...)`` ignores the files and leaves a
    5-token vocabulary, so the size is checked after wrapping.
    """

    SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

    def __init__(self, serialized: str) -> None:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        self.name = "byte_level_bpe"
        backend = Tokenizer.from_str(serialized)
        self.tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
        if len(self.tokenizer) != backend.get_vocab_size() or len(self.tokenizer) <= len(self.SPECIALS) + 256:
            raise ValueError(
                f"byte-level BPE wrapper has {len(self.tokenizer)} tokens, the trained tokenizer "
                f"{backend.get_vocab_size()}: the vocabulary was lost"
            )

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 5000, min_freq: int = 2) -> ByteLevelBPE:
        """Train on ``texts`` (no download); ``vocab_size`` includes the 256 byte symbols and 5 specials."""
        from tokenizers import ByteLevelBPETokenizer
        from tokenizers.processors import RobertaProcessing

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            texts,
            vocab_size=vocab_size,
            min_frequency=min_freq,
            special_tokens=list(cls.SPECIALS),
            show_progress=False,
        )
        bpe._tokenizer.post_processor = RobertaProcessing(
            ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
        )
        return cls(bpe._tokenizer.to_str())

    def state(self) -> dict[str, Any]:
        return {"kind": "byte_level_bpe", "tokenizer_json": self.tokenizer.backend_tokenizer.to_str()}


def tokenizer_from_state(state: dict[str, Any]) -> WordVocabulary | HFTokenizer:
    """The tokenizer an exported model was trained with (its ``state()``, kept in ``model.json``)."""
    kind = state.get("kind")
    if kind == "word_vocabulary":
        return WordVocabulary(state["words"])
    if kind == "byte_level_bpe":
        return ByteLevelBPE(state["tokenizer_json"])
    if kind == "hf":
        return HFTokenizer(state["name"])
    raise ValueError(f"unknown tokenizer state kind {kind!r}")


def build_tokenizer(
    name: str, train_texts: Iterable[str] = (), vocab_size: int = 5000, min_freq: int = 1
) -> WordVocabulary | HFTokenizer:
    """The tokenizer that goes with :func:`build_text_encoder` ``name``: a vocabulary (``bilstm``) or
    a byte-level BPE (``roberta_small``) built from ``train_texts``, else the Hugging Face tokenizer
    of ``name``."""
    if name == "roberta_small":
        return ByteLevelBPE.train(train_texts, vocab_size=vocab_size, min_freq=min_freq)
    if name in OFFLINE_ENCODERS:
        return WordVocabulary.build(train_texts, max_size=vocab_size, min_freq=min_freq)
    return HFTokenizer(name)


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


OFFLINE_ENCODERS = ("bilstm", "roberta_small")


def build_text_encoder(name: str = "bilstm", vocab_size: int = 5000, **kwargs: Any) -> nn.Module:
    """A text encoder by name: ``bilstm`` (kwargs of :class:`BiLSTMTextEncoder`), ``roberta_small``
    (kwargs of :class:`SmallRobertaEncoder`) or a Hugging Face name/path (kwargs of
    :class:`HFTextEncoder`; ``vocab_size`` and the small models' size arguments are ignored)."""
    if name == "bilstm":
        return BiLSTMTextEncoder(vocab_size=vocab_size, **kwargs)
    if name == "roberta_small":
        kwargs.pop("freeze", None)
        return SmallRobertaEncoder(vocab_size=vocab_size, **kwargs)
    for key in (
        "embed_dim",
        "hidden",
        "num_layers",
        "dropout",
        "layers",
        "heads",
        "intermediate",
        "max_length",
    ):
        kwargs.pop(key, None)
    return HFTextEncoder(name, **kwargs)
