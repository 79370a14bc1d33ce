"""Text encoders by name: the offline vocabulary + BiLSTM, a local Hugging Face encoder, the id bag."""

import pytest
import torch

from lit_modules.text_encoders import (
    BiLSTMTextEncoder,
    TokenBagEncoder,
    WordVocabulary,
    build_text_encoder,
    build_tokenizer,
    simple_tokens,
)


def test_vocabulary_from_training_texts():
    texts = ["Flood in #SriLanka, help!", "flood again @user https://t.co/x", "help"]
    assert simple_tokens(texts[0]) == ["flood", "in", "#srilanka", "help"]
    vocab = WordVocabulary.build(texts, max_size=5)
    assert vocab.words[:4] == ["<pad>", "<unk>", "flood", "help"] and len(vocab) == 5
    ids, mask = vocab.encode(["help flood zzz", ""], max_length=8)
    assert ids.tolist() == [[3, 2, 1], [1, 0, 0]] and mask.tolist() == [[True] * 3, [True, False, False]]
    assert WordVocabulary(vocab.state()["words"]).encode(["help"])[0].tolist() == [[3]]


def test_bilstm_pools_over_real_tokens_only():
    torch.manual_seed(0)
    enc = build_text_encoder("bilstm", vocab_size=10, embed_dim=8, hidden=4)
    assert isinstance(enc, BiLSTMTextEncoder) and enc.num_features == 8
    ids = torch.tensor([[3, 4, 0, 0], [3, 4, 5, 6]])
    out = enc(ids, ids > 0)
    short = enc(ids[:1, :2], ids[:1, :2] > 0)
    torch.testing.assert_close(out[0], short[0])  # padding never changes the vector
    out.sum().backward()
    assert enc.embedding.weight.grad.abs().sum() > 0


def test_token_bag():
    bag = TokenBagEncoder(6, dim=4)
    out = bag(torch.tensor([[2, 0], [2, 3], [0, 0]]))
    torch.testing.assert_close(out[0], bag.embedding.weight[2])
    torch.testing.assert_close(out[2], torch.zeros(4))


def test_hugging_face_encoder_from_a_local_folder(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "flood", "help", "fire"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    tok.save_pretrained(tmp_path / "tiny")
    config = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(tmp_path / "tiny")
    name = str(tmp_path / "tiny")
    tokenizer = build_tokenizer(name)
    ids, mask = tokenizer.encode(["flood help", "fire"], max_length=8)
    assert ids[0, 0].item() == 2 and mask.sum(1).tolist() == [4, 3]
    enc = build_text_encoder(name, vocab_size=999, embed_dim=1, hidden=1, pooling="mean", freeze=True)
    out = enc(ids, mask)
    assert out.shape == (2, 16) and enc.num_features == 16
    assert not any(p.requires_grad for p in enc.parameters())
