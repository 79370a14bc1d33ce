"""The relevance data at scale: caption + sentence items joined from token arrays, built once and
memory-mapped; the captioned-images modes; the scale twin read by the real reader and DataModule."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from datamodules.imagenet_captions.captioned_images import CaptionedImagesDataModule
from datamodules.imagenet_captions.reader import num_test_captions, read_imagenet_captions, split_per_class
from datamodules.imagenet_captions.relevance import RelevanceDataModule
from datamodules.imagenet_captions.relevance_dataset import (
    HEADER_FILE,
    read_relevance_dataset,
    write_relevance_dataset,
)
from datamodules.preprocessing.text import build_tokenizer
from datamodules.synthetic.imagenet_captions import write_imagenet_captions, write_scale_twin
from datamodules.text_batches import JoinedTexts, TokenArrays, encode_pieces_to_arrays


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("ic")
    write_imagenet_captions(root, num_classes=6, num_captions=160, image_size=16)
    return root


def relevance_module(root, tmp_path, **kwargs):
    defaults = {"text_encoder": "roberta_small", "text_vocab_size": 400, "text_max_length": 24}
    dm = RelevanceDataModule(
        str(root), dataset_dir=str(tmp_path / "built"), batch_size=8, **{**defaults, **kwargs}
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_items_equal_the_tokenised_joined_text(twin, tmp_path):
    """Joined from a caption's and a sentence's token rows when read, an item is exactly what the
    tokenizer makes of ``caption + " " + sentence`` cut to the budget by its start."""
    dm = relevance_module(twin, tmp_path)
    _, splits = read_relevance_dataset(dm.dataset_dir)
    for split, data in (("train", dm.data_train), ("test", dm.data_test)):
        texts = [it["text"] for it in splits[split]]
        ids, mask = dm.tokenizer.encode(texts, 24, keep_end=True)
        expected = [row[m].tolist() for row, m in zip(ids, mask)]
        assert [data[i]["ids"] for i in range(len(data))] == expected
        assert data.lengths == [len(e) for e in expected]
        assert [data[i]["label"] for i in range(len(data))] == [it["label"] for it in splits[split]]
    assert max(data.lengths) == 24  # some items are over the budget


def test_end_truncation_keeps_the_captions_start_and_the_whole_sentence():
    tok = build_tokenizer("bilstm", ["a b c d e f g h s t"], vocab_size=50)
    first = encode_pieces_to_arrays(tok, ["a b c d e f g h"], keep=8)
    second = encode_pieces_to_arrays(tok, ["s t"])
    items = np.array([[0, 0, 3]])
    end = JoinedTexts(first, second, items, max_length=5, truncate="end")[0]
    start = JoinedTexts(first, second, items, max_length=5, truncate="start")[0]
    assert end["ids"] == tok.ids(["a", "b", "c", "s", "t"]) and end["label"] == 3
    assert start["ids"] == tok.ids(["f", "g", "h", "s", "t"])
    alone = JoinedTexts(first, second, items, max_length=1, truncate="end")[0]  # sentence over budget
    assert alone["ids"] == tok.ids(["s"])


def test_token_arrays_are_memory_mapped_and_pickle_as_paths(tmp_path):
    rows = [[0, 5, 2], [], [7] * 40]
    TokenArrays.from_rows(rows, np.uint16).save(tmp_path, "t")
    arrays = TokenArrays.load(tmp_path, "t")
    assert isinstance(arrays.ids, np.memmap) and [arrays[i].tolist() for i in range(3)] == rows
    blob = pickle.dumps(arrays)
    assert len(blob) < 500  # the paths, not the ids
    again = pickle.loads(blob)
    assert isinstance(again.ids, np.memmap) and again.lengths.tolist() == [3, 0, 40]


def test_built_once_then_loaded_and_rebuilt_when_a_source_or_setting_changes(twin, tmp_path):
    dm = relevance_module(twin, tmp_path)
    header = dm.dataset_dir / HEADER_FILE
    tokens = next(dm.dataset_dir.glob("tokens_*/tokens.json"))
    stamps = (header.stat().st_mtime_ns, tokens.stat().st_mtime_ns)
    again = relevance_module(twin, tmp_path)  # another process of the same run: nothing rebuilt
    assert (header.stat().st_mtime_ns, tokens.stat().st_mtime_ns) == stamps
    assert again.data_train[3] == dm.data_train[3] and len(again.tokenizer) == len(dm.tokenizer)
    other = relevance_module(twin, tmp_path, text_max_length=16)  # new token arrays, same dataset
    assert header.stat().st_mtime_ns == stamps[0] and len(list(dm.dataset_dir.glob("tokens_*"))) == 2
    assert max(other.data_train.lengths) == 16
    descriptions = twin / "class_descriptions.json"
    os.utime(descriptions, ns=(descriptions.stat().st_atime_ns, descriptions.stat().st_mtime_ns + 10**9))
    relevance_module(twin, tmp_path)
    assert header.stat().st_mtime_ns != stamps[0]  # the source changed: rebuilt


def test_sentence_chunks_and_classes_from_the_data(twin, tmp_path):
    descriptions = json.loads((twin / "class_descriptions.json").read_text())
    extra = {**descriptions, "n09999999": ["A class without captions.", "It has none."]}
    (tmp_path / "d.json").write_text(json.dumps(extra))
    counts = write_relevance_dataset(
        twin / "imagenet_captions.json", tmp_path / "d.json", tmp_path / "two", sentences_per_item=2
    )
    header, splits = read_relevance_dataset(tmp_path / "two")
    assert counts["described_classes_without_captions"] == ["n09999999"]
    assert header["classes"] == sorted(descriptions) and counts["classes"] == len(descriptions)
    for wnid, row in counts["per_class"].items():
        assert row["sentences"] == -(-min(10, len(descriptions[wnid])) // 2)  # ceil(n / 2) chunks
    item = splits["train"][0]
    wnid = header["classes"][item["label"]]
    chunk = " ".join(descriptions[wnid][:2]) if len(descriptions[wnid]) <= 10 else None
    if chunk is not None:
        assert item["text"].endswith(chunk)


def test_split_per_class_matches_the_class_by_class_draw():
    """The vectorised split draws exactly what a loop over the sorted classes draws."""
    rng = np.random.default_rng(4)
    labels = [f"n{int(x):08d}" for x in rng.integers(0, 25, size=2000)]
    reference = np.zeros(len(labels), dtype=bool)
    draw = np.random.default_rng(7)
    array = np.array(labels)
    for wnid in sorted(set(labels)):
        members = np.flatnonzero(array == wnid)
        reference[draw.permutation(members)[: num_test_captions(len(members), 0.23)]] = True
    assert (split_per_class(labels, 0.23, seed=7) == reference).all()


# ------------------------------------------------------------------------------ captioned images
def kept_file(root, tmp_path):
    """A relevance file keeping every caption whose index is even, coefficient 0.5 (rank) / 0.8."""
    captions = read_imagenet_captions(root / "imagenet_captions.json")
    lines = [
        json.dumps(
            {"index": c.index, "filename": c.filename, "coef": 0.5, "coef_rank": 0.5, "coef_linear": 0.8}
        )
        for c in captions
        if c.index % 2 == 0
    ]
    path = tmp_path / "kept_captions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def captioned(root, tmp_path, **kwargs):
    dm = CaptionedImagesDataModule(
        str(root), dataset_dir=str(tmp_path / "ci"), text_encoder="bilstm", batch_size=8, **kwargs
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_filtered_captions_lose_their_text_not_their_image_and_label(twin, tmp_path):
    kept = kept_file(twin, tmp_path)
    plain = captioned(twin, tmp_path)
    drop = captioned(twin, tmp_path, mode="drop", relevance_file=str(kept))
    weighted = captioned(twin, tmp_path, mode="weighted", relevance_file=str(kept), coefficient="coef_linear")
    items = captioned(twin, tmp_path, mode="drop", relevance_file=str(kept), filtered="item")
    assert len(drop.data_train) == len(weighted.data_train) == len(plain.data_train) > len(items.data_train)
    index = tmp_path / "ci" / "index"
    entry = np.load(index / "index.npz")["entry"]
    texts = [json.loads(line)["text"] for line in (index / "texts.jsonl").read_text().splitlines()]

    def rows(dm):
        return np.load(dm._mode_dir(dm.header["build"]) / "train_rows.npy")

    assert (rows(drop) == rows(plain)).all() and (entry[rows(items)] % 2 == 0).all()
    for i, row in enumerate(rows(drop)):
        even = entry[row] % 2 == 0
        assert drop.data_train.path(i) == plain.data_train.path(i)
        assert drop.data_train.texts[i]["label"] == plain.data_train.texts[i]["label"]
        expected = drop.tokenizer.encode([texts[row] if even else ""], 32)[0][0].tolist()
        assert drop.data_train.texts[i]["ids"] == expected  # a dropped caption: <unk>, as an empty text
        assert weighted.data_train.texts[i]["weight"] == pytest.approx(0.8 if even else 1.0)
        assert "weight" not in plain.data_train.texts[i] or plain.data_train.texts[i]["weight"] == 1.0
    # the test split is every test caption, with its text, weight 1, in every mode
    assert [drop.data_test.path(i) for i in range(len(drop.data_test))] == [
        plain.data_test.path(i) for i in range(len(plain.data_test))
    ]
    assert len(weighted.data_test) == len(items.data_test) == len(plain.data_test)
    assert {weighted.data_test.texts[i]["weight"] for i in range(len(weighted.data_test))} == {1.0}


def test_real_image_data_does_not_cache_decoded_images():
    from hydra import compose, initialize_config_dir

    from tests.test_configs import CONF

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train.yaml", overrides=["experiment=relevance_weighting", "data=imagenet_captions_images"]
        )
    assert cfg.data.cache_decoded is False
    import inspect

    assert inspect.signature(CaptionedImagesDataModule).parameters["cache_decoded"].default is False


# ------------------------------------------------------------------------------ the scale twin
@pytest.mark.slow
def test_scale_twin_in_the_release_layout_read_by_the_real_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tests.test_configs import CONF

    info = write_scale_twin(tmp_path / "scale", fraction=0.01, seed=1)
    assert info["experiment"] == "relevance_imagenet_captions" and info["items"] == 4640
    captions = read_imagenet_captions(tmp_path / "scale" / "imagenet_captions.json")
    assert len(captions) == info["items"] and len({c.wnid for c in captions}) == 1000
    images = [tmp_path / "scale" / "train" / c.wnid / c.filename for c in captions]
    inodes = {p.stat().st_ino for p in images}
    assert all(p.is_file() for p in images) and len(inodes) <= 16  # hard links to a few JPEGs
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"experiment={info['experiment']}", *info["overrides"]])
    assert cfg.data._target_.endswith("RelevanceDataModule") and cfg.data.synthetic is None
    dm = instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup("fit")
    counts = json.loads((dm.dataset_dir / "relevance_counts.json").read_text())
    # the seed's shares: 389,598 of ~464k entries with more than one word
    assert 0.75 < counts["kept_more_than_one_word"] / counts["captions"] < 0.93
    batch = dm.collate_fn("train")([dm.data_train[i] for i in range(4)])
    assert batch["ids"].dtype == torch.long and batch["ids"].shape[1] <= cfg.data.text_max_length
