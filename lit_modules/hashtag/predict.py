"""Suggest hashtags with an exported hashtag classifier (``python -m experiments.predict``).

Each image gets the averaged softmax of ``tta_copies`` augmented copies at the training strength
(the plain softmax when the model was trained without augmentation). The top hashtag is
suggested when it is not ``other`` and its probability reaches the threshold chosen on validation
for the target precision; otherwise ``"hashtag": null`` (suggest nothing). With ``--tags`` (JSON
lines ``{"image", "tags"}``) the user's hashtags are checked too: those the model gives less than
``implausible_below`` probability are listed under ``implausible`` (the seed's inverse task:
spotting promotional tag spam); tags outside the model's vocabulary are listed as ``unknown_tags``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from datamodules.preprocessing.images import ImageTransforms
from lit_modules.hashtag.tta import implausible_tags
from lit_modules.predictors import rgb_batches


def predict_images(
    net, spec: dict, images: list[Path], folder: Path, tags: dict[str, list[str]], batch_size: int = 32
) -> Iterator[dict]:
    model, data = spec["model"], spec["data"]
    names, other = model["label_names"], model.get("other", "other")
    described = dict(data["transforms"])
    k = model.get("tta_strength") if model.get("tta_strength") is not None else described.get("k", 0.0)
    transforms = ImageTransforms(**{**described, "k": k or 0.0})
    copies = int(model.get("tta_copies") or 0) if k else 0
    tta = copies > 1
    transform, draws = (transforms.train(), copies) if tta else (transforms.eval(), 1)
    threshold = model.get("threshold_tta" if tta else "threshold")
    threshold = float("inf") if threshold is None else float(threshold)
    min_p = float(model.get("implausible_below", 0.05))
    for chunk, pil in rgb_batches(images, batch_size):
        with torch.inference_mode():  # the softmax averaged over the draws
            probs = (
                sum(net.probabilities(torch.stack([transform(p) for p in pil])) for _ in range(draws)) / draws
            )
        for i, path in enumerate(chunk):
            rel = str(path.relative_to(folder))
            conf, idx = probs[i].max(0)
            top = names[int(idx)]
            suggest = top != other and float(conf) >= threshold
            row = {
                "image": rel,
                "hashtag": top if suggest else None,
                "confidence": round(float(conf), 4),
                "top": top,
                "tta_copies": copies if tta else 0,
            }
            user = tags.get(rel, tags.get(path.name))
            if user is not None:
                checked, unknown = implausible_tags(probs[i], user, names, min_p)
                row["tags_checked"] = checked
                row["implausible"] = [c["tag"] for c in checked if not c["plausible"]]
                row["unknown_tags"] = unknown
            yield row
