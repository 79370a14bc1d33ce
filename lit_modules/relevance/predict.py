"""Class probabilities of raw captions with an exported relevance classifier (no Lightning)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


@torch.inference_mode()
def caption_probabilities(
    net: nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    activation: str = "sigmoid",
    max_length: int = 64,
    keep_end: bool = True,
    batch_size: int = 256,
    device: str = "cpu",
) -> Tensor:
    """``P [n, C]`` for ``texts`` (the captions alone). A caption over ``max_length`` tokens loses its
    start (``keep_end``, the rule the training items follow: ``data.truncate: start``) or its end.
    Texts are batched in length order so each batch is padded only to its own longest text (dynamic
    padding), and returned in input order."""
    net = net.to(device).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    probs = torch.empty(len(texts), net.num_classes)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = tokenizer.encode([texts[i] for i in chunk], max_length, keep_end)
        logits = net(ids.to(device), mask.to(device)).float().cpu()
        probs[chunk] = torch.sigmoid(logits) if activation == "sigmoid" else logits.softmax(-1)
    return probs


def predict_images(
    net: nn.Module,
    spec: dict,
    images: list,
    folder,
    tags: dict[str, list[str]],
    batch_size: int = 32,
    top_k: int = 5,
):
    """Predictor of the image + caption classifier (``python -m experiments.predict``, kind
    ``captioned_image_classifier``): the caption of an image is its user text from ``--tags`` (JSON
    lines ``{"image", "tags"}``, joined by spaces; none: an empty caption). Yields ``{"image", "top":
    [{"wnid", "name", "probability"}, ...]}`` with the ``top_k`` classes."""
    from datamodules.preprocessing.images import ImageTransforms
    from datamodules.preprocessing.text import tokenizer_from_state
    from lit_modules.predictors import rgb_batches

    data = spec["data"]
    transform = ImageTransforms(**data["transforms"]).eval()
    tokenizer = tokenizer_from_state(data["text"])
    wnids, names = data["label_names"], data.get("class_names") or data["label_names"]
    net = net.eval()
    for chunk, pictures in rgb_batches(images, batch_size):
        relative = [str(path.relative_to(folder)) for path in chunk]
        captions = [" ".join(tags.get(rel, tags.get(path.name, []))) for rel, path in zip(relative, chunk)]
        ids, mask = tokenizer.encode(captions, data["text"]["max_length"])
        with torch.inference_mode():
            probs = net(torch.stack([transform(p) for p in pictures]), ids, mask).softmax(-1)
        values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
        for rel, vs, ix in zip(relative, values.tolist(), indices.tolist()):
            yield {
                "image": rel,
                "top": [
                    {"wnid": wnids[i], "name": names[i], "probability": round(v, 4)} for v, i in zip(vs, ix)
                ],
            }
