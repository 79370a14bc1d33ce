"""Tokenizers by name: what turns texts into token ids for the suite's text encoders.

Preprocessing shared by the DataModules (which build a tokenizer from the training texts) and the
models' predictors (which rebuild it from an export's ``state()``); the encoders themselves are in
:mod:`lit_modules.text_encoders`. The name is the text encoder's:

* ``bilstm`` (and any other word-level offline encoder): a :class:`WordVocabulary` of the training
  texts (lower-cased word / ``#hashtag`` / ``@mention`` tokens, most frequent first, ``<pad>`` = 0
  and ``<unk>`` = 1);
* ``roberta_small``: a byte-level BPE trained in-process on the training texts (:class:`ByteLevelBPE`);
* any other name: the Hugging Face ``AutoTokenizer`` of that hub name or local folder.

Every tokenizer has ``encode(texts, max_length) -> (ids [n, L] long, mask [n, L] bool)``,
``state()`` (what an exported model needs to tokenize again), and for texts joined from parts
(a caption + a class sentence, tokenised once each): ``pieces(texts)`` (ids without special tokens
and without truncation) and ``frame()`` (the special ids before and after a text). A text is
``prefix + pieces(text) + suffix`` cut to ``max_length``; a joined text ``a + " " + b`` is
``prefix + pieces(a) + pieces(" " + b) + suffix``: word-level and byte-level BPE tokens never span the
blank between the parts (byte-level BPE folds the blank into ``b``'s first token, hence ``" " + b``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

#: Offline text encoders of :func:`lit_modules.text_encoders.build_text_encoder`.
OFFLINE_ENCODERS = ("bilstm", "roberta_small")

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

    @property
    def pad_id(self) -> int:
        return 0

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.index.get(t, 1) for t in tokens]

    def pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, uncut (an empty text: no ids)."""
        return [self.ids(simple_tokens(text)) for text in texts]

    def frame(self) -> tuple[list[int], list[int]]:
        """No special tokens around a text."""
        return [], []

    def encode(
        self, texts: Sequence[str], max_length: int = 48, keep_end: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(ids [n, L], mask [n, L])``, each text cut to its first ``max_length`` tokens (its last
        with ``keep_end``), padded with 0."""
        kept = slice(-max_length, None) if keep_end else slice(max_length)
        rows = [torch.as_tensor(ids[kept] or [1]) for ids in self.pieces(texts)]  # an empty text: <unk>
        ids = pad_sequence(rows, batch_first=True) if rows else torch.zeros(0, 1, dtype=torch.long)
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

    def pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text without special tokens, uncut (by the fast tokenizer's backend when there
        is one: what ``encode`` gives, without building attention masks and offsets)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        backend.no_truncation()  # a setting an earlier call may have left (encode sets its own)
        backend.no_padding()
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [enc.ids for enc in encode(list(texts), add_special_tokens=False)]

    def frame(self) -> tuple[list[int], list[int]]:
        """The special ids ``encode`` puts before and after a text (RoBERTa: ``<s>`` / ``</s>``),
        read off a probe text with and without them."""
        bare = self.pieces(["a"])[0]
        full = self.tokenizer("a")["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return full[:start], full[start + len(bare) :]
        raise ValueError(f"cannot find the text's ids {bare} inside {full} ({self.name})")

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
