"""Network of the hashtag scene classifier (seed 002): an image classifier with a new head.

``HashtagNet(x) = softmax-free logits [n, C]`` over the hashtags + ``other`` (``C = 21`` for the
seed's 20 hashtags). The backbone is any torchvision classification model by name (the seed compared
ResNet18/34/50, VGG11/13 and Inception v3 and chose ResNet34) or ``small_cnn`` (offline default),
from :func:`lit_modules.backbones.build_image_classifier`. Inception v3 runs at any side from 75 px
(the seed's Table 3: 256); in training mode with ``aux_logits`` it also returns the auxiliary logits,
which the module adds to the loss with weight 0.4 (the seed's author's code, as torchvision's
reference training), but that head needs inputs of at least :data:`INCEPTION_AUX_MIN_SIDE` px.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_modules.backbones import build_image_classifier

#: The smallest input side at which Inception v3's auxiliary classifier runs: its 5 x 5 convolution
#: needs a 5 x 5 map after the 17 x 17 stage's 5 x 5 / 3 pooling (a 4 x 4 map at 256 px).
INCEPTION_AUX_MIN_SIDE = 299


class HashtagNet(nn.Module):
    """Image -> hashtag logits.

    Args:
        backbone: ``small_cnn`` or a torchvision model name (``resnet34``, ``inception_v3`` ...).
        num_classes: hashtags + ``other``.
        weights: pretrained switch (``None`` | torchvision weights name | local state-dict file).
        **backbone_kwargs: passed to the backbone (``width``/``depth`` of ``small_cnn`` ...).
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        num_classes: int = 21,
        weights: str | None = None,
        **backbone_kwargs,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.classifier = build_image_classifier(
            backbone, num_outputs=num_classes, weights=weights, **backbone_kwargs
        )
        #: Inception v3 with its auxiliary classifier (trained with it; needs INCEPTION_AUX_MIN_SIDE px).
        self.has_aux_logits = bool(getattr(self.classifier, "aux_logits", False))

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Logits ``[n, C]``; ``(logits, aux_logits)`` for Inception v3 with aux logits in training."""
        out = self.classifier(x)
        if hasattr(out, "logits"):  # torchvision InceptionOutputs / GoogLeNetOutputs
            aux = getattr(out, "aux_logits", None)
            return (out.logits, aux) if aux is not None else out.logits
        return out

    @torch.no_grad()
    def probabilities(self, x: Tensor) -> Tensor:
        return main_logits(self(x)).softmax(dim=1)


def main_logits(out: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """The logits of a :class:`HashtagNet` output, without the auxiliary ones of Inception v3."""
    return out[0] if isinstance(out, tuple) else out
