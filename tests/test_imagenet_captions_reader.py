"""ImageNet-Captions reader, class descriptions, the relevance dataset builder and the text loaders."""

import itertools
import json
import re
from collections import Counter

import pytest
import torch

from datamodules.errors import DatasetFormatError
from datamodules.imagenet_captions.reader import (
    CAPTION_FIELDS,
    num_test_captions,
    read_class_descriptions,
    read_imagenet_captions,
    read_synset_mapping,
    select_sentences,
    split_per_class,
    split_sentences,
)
from datamodules.imagenet_captions.relevance_dataset import (
    ITEMS_FILE,
    read_relevance_dataset,
    write_relevance_dataset,
)
from datamodules.samplers import EpochFractionSampler, LengthGroupedBatchSampler
from datamodules.text_batches import PadCollate
from tests.conftest import REAL_FORMATS

RELEASE = REAL_FORMATS / "imagenet-captions"


def real_file(name: str):
    if not (RELEASE / name).is_file():
        pytest.skip(f"{RELEASE / name} is absent (real-format excerpts live in ../shared/real-formats)")
    return RELEASE / name


_IMAGE_NUMBERS = itertools.count(1)


def entry(wnid="n01443537", title="A goldfish", description="in a bowl", **extra):
    """A release entry with a fresh image (a repeated filename is a duplicate entry)."""
    return {
        "filename": f"{wnid}_{next(_IMAGE_NUMBERS)}.JPEG",
        "wnid": wnid,
        "title": title,
        "description": description,
        "tags": [],
        **extra,
    }


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_real_synset_mapping_parses():
    mapping = read_synset_mapping(real_file("LOC_synset_mapping.txt"))
    assert len(mapping) == 1000
    assert mapping["n01440764"] == ["tench", "Tinca tinca"]
    assert mapping["n02509815"][:2] == ["lesser panda", "red panda"]


def test_reader_expects_the_release_fields():
    readme = real_file("README.md").read_text()
    fields = dict(re.findall(r"^\* (\w+): (.+)$", readme, flags=re.M))
    assert set(fields) == set(CAPTION_FIELDS)
    assert {k: v.strip().split()[0] for k, v in fields.items()} == {
        k: t.__name__ for k, t in CAPTION_FIELDS.items()
    } | {"tags": "list"}


def test_reads_entries_and_joins_title_and_description(tmp_path):
    path = write(tmp_path, "c.json", [entry(tags=["fish", "pet"]), entry(title="x", description="")])
    captions = read_imagenet_captions(path)
    assert (
        captions[0].text() == "A goldfish in a bowl"
        and captions[0].text(with_tags=True) == "A goldfish in a bowl fish pet"
    )
    assert captions[0].has_words() and not captions[1].has_words()


@pytest.mark.parametrize(
    "data, match, field",
    [
        ([entry(wnid="n09999999")], "unknown wnid", "wnid"),
        ([{k: v for k, v in entry().items() if k != "title"}], "entry 0: missing field", "title"),
        ([entry(), entry(tags="fish")], "entry 1: expected list", "tags"),
        ([entry(wnid="goldfish")], "not a WordNet id", "wnid"),
        ({"a": 1}, "expected a JSON list", None),
    ],
)
def test_bad_captions_name_file_entry_and_field(tmp_path, data, match, field):
    path = write(tmp_path, "c.json", data)
    with pytest.raises(DatasetFormatError, match=match) as err:
        read_imagenet_captions(path, known_wnids=["n01443537"])
    assert err.value.path == path and err.value.field == field


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("{}", "no class descriptions"),
        ('{"n01443537": "One sentence only."}', "at least 2"),
        ('{"n01443537": 3}', "expected a text"),
        ("[", "invalid JSON"),
    ],
)
def test_bad_description_files(tmp_path, text, match):
    with pytest.raises(DatasetFormatError, match=match):
        read_class_descriptions(write(tmp_path, "d.json", text))


def test_missing_description_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="missing file"):
        read_class_descriptions(tmp_path / "nope.json")


def test_sentence_splitting_without_downloads():
    text = (
        "The red panda (Ailurus fulgens) is a small mammal native to the eastern Himalayas. It has "
        "dense reddish-brown fur, e.g. on its back! Is it a bear? Not at all. It was described by "
        "F. Cuvier in 1825."
    )
    assert split_sentences(text) == [
        "The red panda (Ailurus fulgens) is a small mammal native to the eastern Himalayas.",
        "It has dense reddish-brown fur, e.g. on its back!",
        "Is it a bear?",
        "Not at all.",
        "It was described by F. Cuvier in 1825.",
    ]


def test_longest_sentences_kept_in_order():
    sentences = [f"s{i}" + "x" * i for i in range(12)]
    assert select_sentences(sentences, 10) == sentences[2:]
    assert select_sentences(sentences[:3], 10) == sentences[:3]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9, 10, 37, 100])
def test_small_class_guarantees(n):
    n_test = num_test_captions(n, 0.23)
    assert n - n_test >= n / 2
    if n >= 2:
        assert n_test >= 0.2 * n


def test_split_on_skewed_class_sizes():
    sizes = {
        "n00000001": 1,
        "n00000002": 3,
        "n00000003": 7,
        "n00000004": 40,
        "n00000005": 100,
        "n00000006": 2000,
    }
    labels = [w for w, n in sizes.items() for _ in range(n)]
    is_test = split_per_class(labels, test_fraction=0.05, seed=3)
    test = Counter(w for w, t in zip(labels, is_test) if t)
    for wnid, n in sizes.items():
        if n <= 100:
            assert n - test[wnid] >= n / 2 and (n == 1 or test[wnid] >= 0.2 * n), (wnid, test[wnid])
    assert test["n00000006"] == 100  # large classes: the plain fraction
    assert (split_per_class(labels, 0.05, seed=3) == is_test).all()


def test_cartesian_product_counts_and_streaming_file(tmp_path):
    captions = [entry("n01443537", f"goldfish {i}", "in a bowl") for i in range(4)]
    captions += [entry("n01440764", f"tench {i}", "") for i in range(2)] + [entry("n01440764", "tench", "")]
    descriptions = {
        "n01443537": [f"Goldfish sentence {i}." for i in range(12)],
        "n01440764": "A tench is a fish. It lives in ponds. Anglers like it.",
    }
    out = tmp_path / "built"
    counts = write_relevance_dataset(
        write(tmp_path, "c.json", captions), write(tmp_path, "d.json", descriptions), out, test_fraction=0.5
    )
    # 6 captions kept (one-word "tench" dropped): 4 x 10 sentences (capped) + 2 x 3 sentences
    assert counts["dropped_short"] == 1 and counts["items_train"] + counts["items_test"] == 4 * 10 + 2 * 3
    header, splits = read_relevance_dataset(out)
    assert header["classes"] == ["n01440764", "n01443537"]
    items = splits["train"] + splits["test"]
    assert Counter(it["caption"] for it in items) == {0: 10, 1: 10, 2: 10, 3: 10, 4: 3, 5: 3}
    assert items[0]["text"].startswith(captions[items[0]["caption"]]["title"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and (out / ITEMS_FILE).is_file()


def test_length_grouped_batches_cover_the_epoch_once():
    lengths = [int(x) for x in torch.randint(1, 50, (230,), generator=torch.Generator().manual_seed(0))]
    sampler = EpochFractionSampler(230, 0.75, seed=1)
    batches = LengthGroupedBatchSampler(sampler, lengths, batch_size=16, pool_batches=4)
    batches.set_epoch(2)
    drawn = list(batches)
    flat = [i for b in drawn for i in b]
    assert sorted(flat) == sorted(sampler) and len(flat) == len(set(flat)) == round(0.75 * 230)
    assert len(drawn) == len(batches)
    # pools of 64 sorted into 4 batches: a batch spans about a quarter of the range
    # (random batches of 16: ~45)
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in drawn]
    assert sum(spreads) / len(spreads) < 20


def test_dynamic_padding_to_the_batch_longest():
    batch = PadCollate(pad_id=1)(
        [{"ids": [0, 5, 2], "label": 3, "index": 0}, {"ids": [0, 2], "label": 1, "index": 1}]
    )
    assert batch["ids"].tolist() == [[0, 5, 2], [0, 2, 1]] and batch["mask"].tolist() == [
        [1, 1, 1],
        [1, 1, 0],
    ]
    assert batch["labels"].tolist() == [3, 1] and "weight" not in batch


def test_relevance_items_over_the_token_budget_keep_their_class_sentence(tmp_path):
    """Items are caption + class sentence (the sentence last): truncation cuts the caption's start."""
    from datamodules.imagenet_captions.relevance import RelevanceDataModule
    from datamodules.preprocessing.text import simple_tokens

    long_caption = "holiday photo of our trip with friends and family near the old harbour at dawn"
    captions = [entry("n01443537", f"{long_caption} {i}", "") for i in range(6)]
    captions += [entry("n01440764", f"{long_caption} tench {i}", "") for i in range(6)]
    descriptions = {
        "n01443537": ["Goldfish are orange fish.", "Goldfish live in bowls."],
        "n01440764": ["A tench is a green fish.", "Tench live in ponds."],
    }
    write(tmp_path, "imagenet_captions.json", captions)
    write(tmp_path, "class_descriptions.json", descriptions)
    dm = RelevanceDataModule(
        str(tmp_path),
        synset_mapping=None,
        text_encoder="bilstm",
        text_min_freq=1,
        text_max_length=6,
        build={"test_fraction": 0.5},
    )
    dm.prepare_data()
    dm.setup()
    _, splits = read_relevance_dataset(dm.dataset_dir)
    assert len(splits["train"]) == len(dm.data_train) > 0
    for k, item in enumerate(splits["train"]):
        words = simple_tokens(item["text"])  # "<caption> <class sentence>": 18-20 words
        assert len(words) > 6 and dm.data_train[k]["ids"] == dm.tokenizer.ids(words[-6:])
