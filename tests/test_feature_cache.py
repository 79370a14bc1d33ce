"""Precomputed frozen-encoder features (datamodules/feature_cache.py, experiments/precompute_features.py):
the cache round-trips and refuses data or encoders it was not computed for, and training on it gives
exactly the run that runs the frozen encoder itself."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from datamodules.errors import DatasetFormatError
from datamodules.feature_cache import encoder_fingerprint, load_feature_cache, write_feature_cache
from lit_modules.base import SuiteModule
from tests.conftest import PROJECT_ROOT, read_metrics, run_cli


def _write(root: Path) -> Path:
    feats = {"train": {"image": torch.arange(6.0).view(3, 2)}, "test": {"image": torch.ones(1, 2)}}
    keys = {"train": ["1/a", "2/b", "3/c"], "test": ["4/d"]}
    return write_feature_cache(root, feats, keys, {"image": {"fingerprint": "f0", "encoder": {"name": "x"}}})


def test_round_trip_and_key_check(tmp_path):
    cache = load_feature_cache(_write(tmp_path / "cache"))
    assert cache.modalities == ["image"] and cache.fingerprint("image") == "f0"
    assert torch.equal(cache.split("train", ["1/a", "2/b", "3/c"])["image"], torch.arange(6.0).view(3, 2))
    with pytest.raises(DatasetFormatError, match=r"first difference at row 1: cached '2/b', data '9/z'"):
        cache.split("train", ["1/a", "9/z", "3/c"])
    with pytest.raises(DatasetFormatError, match="3 cached, 2 in the data"):
        cache.split("train", ["1/a", "2/b"])
    with pytest.raises(DatasetFormatError, match="no features for split 'dev'"):
        cache.split("dev", [])


def test_broken_caches_name_the_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="manifest.json.*no feature cache here"):
        load_feature_cache(tmp_path / "nothing")
    root = _write(tmp_path / "cache")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["count"] = 4
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetFormatError, match=r"train.safetensors.*image.*\[4, 2\] tensor, got \(3, 2\)"):
        load_feature_cache(root)
    manifest["splits"]["train"]["count"] = 3
    (root / "manifest.json").write_text(json.dumps(manifest))
    (root / "test.safetensors").unlink()
    with pytest.raises(DatasetFormatError, match="test.safetensors.*missing"):
        load_feature_cache(root)


def test_fingerprint_sees_weights_and_buffers():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    torch.manual_seed(0)
    b = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert encoder_fingerprint(a) == encoder_fingerprint(b)
    b[1].running_mean += 1e-3
    assert encoder_fingerprint(a) != encoder_fingerprint(b)


class _FrozenFirstLayer(SuiteModule):
    """A batch-norm feature layer kept frozen by a ``train()`` override, as the suite's models do."""

    def __init__(self):
        super().__init__(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
        self.frozen = nn.BatchNorm1d(4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 1)

    def train(self, mode: bool = True):
        super().train(mode)
        self.frozen.eval()
        return self

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.head(self.frozen(x)).pow(2).mean()


def test_frozen_parts_stay_frozen_during_fit():
    """Lightning >= 2.2 never calls ``train()`` at fit start; SuiteModule.on_train_start does, so the
    frozen batch-norm statistics do not move."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    model = _FrozenFirstLayer()
    before = model.frozen.running_mean.clone()
    data = DataLoader(TensorDataset(torch.randn(32, 4) * 3 + 5), batch_size=8)
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, data)
    assert torch.equal(model.frozen.running_mean, before)


TWIN = [
    "experiment=crisismmd",
    "data.synthetic.num_tweets=600",
    "data.synthetic.image_size=32",
    "augmentation.resize=32",
    "augmentation.crop=32",
    "model.net.freeze=[image]",
    "trainer.max_epochs=2",
    "callbacks.rich_progress_bar=null",
]


@pytest.mark.slow
def test_training_on_cached_features_is_the_same_run(tmp_path, synthetic_dir):
    common = [*TWIN, f"paths.synthetic_dir={synthetic_dir}", f"paths.log_dir={tmp_path / 'logs'}"]
    cache = tmp_path / "features"
    run_cli("experiments.precompute_features", *common, f"data.features_dir={cache}")
    manifest = json.loads((cache / "manifest.json").read_text())
    assert list(manifest["modalities"]) == ["image"] and set(manifest["splits"]) == {"train", "dev", "test"}

    run_cli("experiments.train", *common, f"run_dir={tmp_path / 'encoder'}")
    run_cli("experiments.train", *common, f"data.features_dir={cache}", f"run_dir={tmp_path / 'cached'}")
    encoder, cached = read_metrics(tmp_path / "encoder")["test"], read_metrics(tmp_path / "cached")["test"]
    assert encoder.keys() == cached.keys()
    for key in encoder:
        assert cached[key] == pytest.approx(encoder[key], rel=1e-5, abs=1e-6), key

    # Another seed initialises another random image encoder: its features are not these.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            *common,
            "seed=1",
            f"data.features_dir={cache}",
            f"run_dir={tmp_path / 'other'}",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "come from another encoder" in proc.stderr + proc.stdout


def test_frozen_modalities_are_declared_or_untrainable():
    from lit_modules.backbones import build_image_classifier
    from lit_modules.graph_fusion import MultimodalMultiTaskNet
    from lit_modules.text_encoders import TokenBagEncoder, build_text_encoder

    text = build_text_encoder("bilstm", vocab_size=20, embed_dim=8, hidden=8).requires_grad_(
        False
    )  # a frozen LM
    net = MultimodalMultiTaskNet(
        {"a": 2},
        ["image", "text", "extra"],
        dim=16,
        freeze=["image"],
        image_encoder=build_image_classifier("small_cnn", 0, width=8, depth=2),
        text_encoder=text,
        extra_encoder=TokenBagEncoder(5, 16),
    )
    assert net.frozen_modalities() == ["image", "text"]
    net.train()
    assert (
        not net.encoders["image"].training
        and not net.encoders["text"].training
        and net.encoders["extra"].training
    )
    batch = {
        "image": torch.randn(3, 3, 16, 16),
        "text_ids": torch.randint(1, 20, (3, 5)),
        "text_mask": torch.ones(3, 5, dtype=torch.bool),
        "extra_ids": torch.randint(1, 5, (3, 1)),
    }
    with torch.no_grad():
        direct = net(batch)["logits"]["a"]
        cached = {**batch, "image_features": net.encode_modality("image", batch)}
        del cached["image"]  # the cached path never touches the image
        assert torch.allclose(net(cached)["logits"]["a"], direct)


def test_another_split_of_the_cached_samples_by_key(tmp_path):
    cache = load_feature_cache(_write(tmp_path / "cache"))
    rows = cache.by_keys(["4/d", "2/b", "1/a"])["image"]
    torch.testing.assert_close(rows, torch.tensor([[1.0, 1.0], [2.0, 3.0], [0.0, 1.0]]))
    assert cache.by_keys([])["image"].shape == (0, 2)
    with pytest.raises(DatasetFormatError, match="1 of 2 samples are not in the cache.*'9/z'"):
        cache.by_keys(["1/a", "9/z"])
