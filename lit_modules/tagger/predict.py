"""Tag images with an exported multi-label tagger (used by ``python -m experiments.predict``).

User tags, when given, feed the tag branch (tags outside the model's vocabulary are ignored and
counted); without them it sees an empty tag vector. Each output row holds the image, the labels of
the exported rule (the composite by default) sorted by probability, and the predicted label count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from datamodules.preprocessing.images import ImageTransforms
from lit_modules.predictors import rgb_batches
from lit_modules.tagger.module import RULES, apply_rule

log = logging.getLogger(__name__)


def predict_images(
    net, spec: dict, images: list[Path], folder: Path, user_tags: dict[str, list[str]], batch_size: int = 32
) -> Iterator[dict]:
    data = spec["data"]
    labels, vocab = data["label_names"], {t: i for i, t in enumerate(data["tag_names"])}
    transform = ImageTransforms(**data["transforms"]).eval()
    rule, top_k, min_k = spec["model"]["rule"], spec["model"]["top_k"], spec["model"]["min_k"]
    alpha = spec["model"].get("alpha") or 0.5
    rounding = spec["model"].get("count_rounding", "half_even")  # exports that predate the setting
    unknown = 0
    for chunk, pictures in rgb_batches(images, batch_size):
        tag_vecs = []
        for path in chunk:
            vec = torch.zeros(len(vocab))
            for tag in user_tags.get(str(path.relative_to(folder)), user_tags.get(path.name, [])):
                if tag in vocab:
                    vec[vocab[tag]] = 1.0
                else:
                    unknown += 1
            tag_vecs.append(vec)
        with torch.inference_mode():
            out = net(torch.stack([transform(p) for p in pictures]), torch.stack(tag_vecs))
            chosen = apply_rule(out, rule, top_k=top_k, min_k=min_k, alpha=alpha, count_rounding=rounding)
            probs = out[RULES[rule].scores].sigmoid()
        for i, path in enumerate(chunk):
            idx = chosen[i].nonzero().flatten().tolist()
            idx.sort(key=lambda j: -probs[i, j].item())
            yield {
                "image": str(path.relative_to(folder)),
                "labels": [labels[j] for j in idx],
                "scores": [round(probs[i, j].item(), 4) for j in idx],
                "count": round(out["count"][i].item(), 3),
            }
    if unknown:
        log.warning("%d user tags were not in the model's tag vocabulary and were ignored", unknown)
