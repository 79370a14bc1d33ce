"""The thirteen parts of the cycle-consistent image-text embedder (seed 004): two autoencoders, four
latent maps and five critics (the seed authors' code has twelve: one latent critic instead of two).

Notation: ``x`` an image, ``w`` a caption (token ids); the autoencoders give embeddings
``f_I = Img_enc(x)``, ``f_T = Txt_enc(w)`` and reconstruct ``x ~ Img_dec(f_I)``, ``w ~ Txt_dec(f_T)``.
The embedding encoders map both into the shared latent space, ``z_I = E_I(f_I)``, ``z_T = E_T(f_T)``,
and the embedding decoders map back, ``f_I ~ D_I(z)``, ``f_T ~ D_T(z)``; cross-modal translation is
``D_T(E_I(f_I))`` (image -> text embedding) and ``D_I(E_T(f_T))``. Retrieval scores are
``cos(z_I, z_T)``. Critics: two latent critics (one per direction: ``C^Z_I`` tells image latents
from text latents and ``C^Z_T`` the reverse, as the seed's "latent-space discriminators"), two
domain critics (``C_I`` real ``f_I`` vs translated ``D_I(z_T)``; ``C_T`` likewise) and the prior
critic ``C_P``, which tells samples of the prior ``N(0, I)`` from latents (the seed authors'
``distr_dis``, JWAE's latent discriminator).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lit_modules.backbones import build_image_classifier

AUTOENCODER_PARTS = ("image_encoder", "image_decoder", "text_encoder", "text_decoder")
EMBEDDING_PARTS = ("image_to_latent", "latent_to_image", "text_to_latent", "latent_to_text")
CRITIC_PARTS = (
    "image_latent_critic",
    "text_latent_critic",
    "image_domain_critic",
    "text_domain_critic",
    "prior_critic",
)
PARTS = AUTOENCODER_PARTS + EMBEDDING_PARTS + CRITIC_PARTS


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class ImageEncoder(nn.Module):
    """``Img_enc``: a backbone's pooled features (``build_image_classifier(num_outputs=0)``) -> ``f_I``."""

    def __init__(
        self, embedding_dim: int, backbone: str = "small_cnn", weights: str | None = None, **kwargs
    ) -> None:
        super().__init__()
        self.backbone = build_image_classifier(backbone, num_outputs=0, weights=weights, **kwargs)
        self.project = nn.Linear(self.backbone.num_features, embedding_dim)

    def forward(self, image: Tensor) -> Tensor:
        return self.project(self.backbone(image))


class ImageDecoder(nn.Module):
    """``Img_dec``: ``f_I`` -> a 4x4 map, then stride-2 transposed convolutions up to ``image_size``."""

    def __init__(self, embedding_dim: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        steps = int(math.log2(image_size // 4))
        if 4 * 2**steps != image_size:
            raise ValueError(f"image_size must be 4 * 2^k, got {image_size}")
        channels = [width * 2 ** min(steps - 1 - i, 3) for i in range(steps)]
        self.seed_map = nn.Linear(embedding_dim, channels[0] * 16)
        layers: list[nn.Module] = []
        for i in range(steps):
            out = channels[i + 1] if i + 1 < steps else 3
            layers.append(nn.ConvTranspose2d(channels[i], out, 4, stride=2, padding=1))
            if i + 1 < steps:
                layers += [nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        self.upsample = nn.Sequential(*layers)
        self.channels = channels[0]

    def forward(self, f_image: Tensor) -> Tensor:
        return self.upsample(self.seed_map(f_image).view(-1, self.channels, 4, 4))


class TextEncoder(nn.Module):
    """``Txt_enc``: word embeddings and a GRU; ``f_T`` is the hidden state after the last real token."""

    def __init__(self, vocab_size: int, embedding_dim: int, word_dim: int = 64) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, embedding_dim, batch_first=True)

    def forward(self, ids: Tensor) -> Tensor:
        states, _ = self.gru(self.words(ids))
        last = (ids > 0).sum(dim=1).clamp_min(1) - 1
        return states[torch.arange(len(ids), device=ids.device), last]


class TextDecoder(nn.Module):
    """``Txt_dec``: a GRU started from ``f_T``, teacher-forced on the caption shifted right (id 0 starts)."""

    def __init__(self, vocab_size: int, embedding_dim: int, word_dim: int = 64) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, embedding_dim, batch_first=True)
        self.out = nn.Linear(embedding_dim, vocab_size)

    def forward(self, f_text: Tensor, ids: Tensor) -> Tensor:
        previous = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], dim=1)
        states, _ = self.gru(self.words(previous), f_text.unsqueeze(0).contiguous())
        return self.out(states)  # [B, L, V] logits


class CycleRetrievalNet(nn.Module):
    """The thirteen parts (see module doc); sizes from ``conf/model/cycle_retrieval.yaml``."""

    def __init__(
        self,
        vocab_size: int,
        image_size: int,
        image_dim: int = 64,
        text_dim: int = 64,
        latent_dim: int = 64,
        hidden: int = 128,
        critic_hidden: int = 128,
        word_dim: int = 64,
        decoder_width: int = 32,
        image_backbone: dict | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(image_dim, **(image_backbone or {}))
        self.image_decoder = ImageDecoder(image_dim, image_size, decoder_width)
        self.text_encoder = TextEncoder(vocab_size, text_dim, word_dim)
        self.text_decoder = TextDecoder(vocab_size, text_dim, word_dim)
        self.image_to_latent = mlp([image_dim, hidden, latent_dim])
        self.latent_to_image = mlp([latent_dim, hidden, image_dim])
        self.text_to_latent = mlp([text_dim, hidden, latent_dim])
        self.latent_to_text = mlp([latent_dim, hidden, text_dim])
        self.image_latent_critic = mlp([latent_dim, critic_hidden, critic_hidden, 1])
        self.text_latent_critic = mlp([latent_dim, critic_hidden, critic_hidden, 1])
        self.image_domain_critic = mlp([image_dim, critic_hidden, critic_hidden, 1])
        self.text_domain_critic = mlp([text_dim, critic_hidden, critic_hidden, 1])
        self.prior_critic = mlp([latent_dim, critic_hidden, 1])  # JWAE: one hidden layer

    def embed_images(self, image: Tensor) -> Tensor:
        """``z_I = E_I(Img_enc(x))``: the retrieval embedding of images."""
        return self.image_to_latent(self.image_encoder(image))

    def embed_captions(self, ids: Tensor) -> Tensor:
        """``z_T = E_T(Txt_enc(w))``: the retrieval embedding of captions (``ids [..., L]``)."""
        shape = ids.shape[:-1]
        return self.text_to_latent(self.text_encoder(ids.reshape(-1, ids.shape[-1]))).view(*shape, -1)
