"""Image backbones by name, each with a fresh classification head.

One place builds every image network of the suite:

* ``small_cnn``: a small randomly initialised CNN, the offline default (no weights to download);
* any torchvision classification model by name (``resnet34``, ``resnext101_32x8d``,
  ``inception_v3``, ``vgg11`` ...), its classifier replaced by a new ``num_outputs``-way layer.

``weights`` is the pretrained-weights switch: ``None`` (random init), a torchvision weights enum
name (``"DEFAULT"``, ``"IMAGENET1K_V2"``: downloaded by torchvision, so online or pre-cached only),
or a path to a local ``.pth``/``.safetensors`` state dict of the *torchvision* model (the usual way
on an offline cluster: download once on a login node, point the config at the file).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn


class SmallConvNet(nn.Module):
    """A compact CNN for small images: ``depth`` blocks of ``convs_per_block`` x (conv3x3-BN-ReLU)
    then 2x2 max-pool, global average pooling and a linear head. Channel width doubles per block
    (capped at 8x ``width``).

    Used as the offline default so that the whole suite trains on CPU in minutes.
    """

    def __init__(
        self,
        num_outputs: int,
        width: int = 32,
        depth: int = 4,
        convs_per_block: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(depth):
            out_ch = width * 2 ** min(i, 3)
            for _ in range(convs_per_block):
                layers += [
                    nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                ]
                in_ch = out_ch
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = in_ch
        self.head = nn.Sequential(nn.Dropout(dropout), _new_head(in_ch, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _new_head(in_features: int, num_outputs: int) -> nn.Module:
    """A fresh ``num_outputs``-way linear layer, or the identity (pooled features) for 0 outputs."""
    return nn.Linear(in_features, num_outputs) if num_outputs > 0 else nn.Identity()


def _replace_head(model: nn.Module, num_outputs: int) -> int:
    """Swap the last classification layer of a torchvision model; return its input width."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):  # ResNet, ResNeXt, Inception, GoogLeNet
        width = model.fc.in_features
        model.fc = _new_head(width, num_outputs)
        aux = getattr(model, "AuxLogits", None)
        if aux is not None and isinstance(getattr(aux, "fc", None), nn.Linear):
            aux.fc = _new_head(aux.fc.in_features, num_outputs)
        return width
    for attr in ("classifier", "heads", "head"):  # VGG, AlexNet, EfficientNet, MobileNet, ConvNeXt, ViT, Swin
        block = getattr(model, attr, None)
        if isinstance(block, nn.Linear):
            setattr(model, attr, _new_head(block.in_features, num_outputs))
            return block.in_features
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1, -1, -1):
                if isinstance(block[i], nn.Linear):
                    width = block[i].in_features
                    block[i] = _new_head(width, num_outputs)
                    return width
    raise ValueError(f"don't know where the classifier of {type(model).__name__} is; add it to _replace_head")


def _load_local_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def build_image_classifier(
    name: str = "small_cnn",
    num_outputs: int = 1000,
    weights: str | None = None,
    **kwargs,
) -> nn.Module:
    """Build an image classifier by name with a new ``num_outputs``-way head.

    Args:
        name: ``small_cnn`` or any name of ``torchvision.models.list_models(torchvision.models)``.
        num_outputs: size of the new head; ``0`` gives a feature extractor (pooled features, the
            head replaced by the identity; its width is the model's ``num_features`` attribute).
        weights: ``None``, a torchvision weights name, or a local state-dict file (see module doc).
        **kwargs: passed to the constructor (e.g. ``width`` for ``small_cnn``, ``aux_logits`` for Inception).
    """
    if name == "small_cnn":
        if weights:
            raise ValueError("small_cnn has no pretrained weights; set weights=null")
        return SmallConvNet(num_outputs=num_outputs, **kwargs)
    available = torchvision.models.list_models(torchvision.models)
    if name not in available:
        raise ValueError(f"unknown image backbone {name!r}; use 'small_cnn' or one of {sorted(available)}")
    local = Path(weights) if weights and ("/" in weights or Path(weights).suffix) else None
    tv_weights = None if (weights is None or local is not None) else weights
    if name == "inception_v3":
        # The ImageNet checkpoint has aux logits; random init does not need them.
        kwargs.setdefault("aux_logits", tv_weights is not None or local is not None)
        kwargs.setdefault("init_weights", tv_weights is None)
    model = torchvision.models.get_model(name, weights=tv_weights, **kwargs)
    if local is not None:
        _load_local_weights(model, local)
    model.num_features = _replace_head(model, num_outputs)
    return model
