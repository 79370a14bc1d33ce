"""Embed images with an exported cycle-consistent embedder and rank candidate captions
(used by ``python -m experiments.predict`` once ``cycle_retrieval`` is in its ``PREDICTORS``).

The per-image "tags" of the predict command are read as candidate captions for that image: each
output row holds the image's L2-normalised joint embedding ``z_I`` and the candidates sorted by
cosine similarity to it (text -> latent through ``E_T(Txt_enc(w))``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from datamodules.preprocessing.images import ImageTransforms
from datamodules.preprocessing.text import tokenizer_from_state
from lit_modules.predictors import rgb_batches


def predict_images(
    net, spec: dict, images: list[Path], folder: Path, candidates: dict[str, list[str]], batch_size: int = 32
) -> Iterator[dict]:
    data = spec["data"]
    transform = ImageTransforms(**data["transforms"]).eval()
    vocabulary = tokenizer_from_state(data["vocabulary"])
    for chunk, pictures in rgb_batches(images, batch_size):
        with torch.inference_mode():
            z_images = F.normalize(net.embed_images(torch.stack([transform(p) for p in pictures])), dim=1)
        for z, path in zip(z_images, chunk):
            name = str(path.relative_to(folder))
            row: dict = {"image": name, "embedding": [round(v, 5) for v in z.tolist()]}
            texts = candidates.get(name, candidates.get(path.name, []))
            if texts:
                ids, _ = vocabulary.encode(texts, max_length=data["max_length"])
                with torch.inference_mode():
                    scores = F.normalize(net.embed_captions(ids), dim=1) @ z
                order = scores.argsort(descending=True).tolist()
                row["captions"] = [texts[k] for k in order]
                row["scores"] = [round(float(scores[k]), 4) for k in order]
            yield row
