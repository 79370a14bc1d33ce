"""The focal loss (seed 003, eq. 10) against torchvision's sigmoid focal loss, and its masking."""

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from lit_modules.losses import focal_loss, one_vs_rest_loss


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0, 3.5])
def test_matches_torchvision_with_alpha_off(beta):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    targets = (torch.rand(64, 5, generator=g) < 0.3).float()
    ours = focal_loss(logits, targets, beta=beta, reduction="none")
    ref = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=beta, reduction="none")
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(focal_loss(logits, targets, beta=beta), ref.mean())
    torch.testing.assert_close(
        focal_loss(logits, targets, beta=beta, alpha=0.25, reduction="sum"),
        sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=beta, reduction="sum"),
    )


def test_formula_by_hand():
    # p = sigmoid(0) = 0.5 -> p_d = 0.5 either way: L = 0.5^2 * log 2
    loss = focal_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), beta=2, reduction="none")
    torch.testing.assert_close(loss, torch.full((1, 2), 0.25 * torch.log(torch.tensor(2.0)).item()))


def test_missing_labels_are_masked_not_imputed():
    logits = torch.randn(4, 3, requires_grad=True)
    target = torch.tensor([2, -1, 0, -1])
    loss, count = one_vs_rest_loss(logits, target, kind="focal")
    assert count == 2
    ref = focal_loss(logits[[0, 2]], torch.nn.functional.one_hot(target[[0, 2]], 3).float(), reduction="none")
    torch.testing.assert_close(loss, ref.sum(1).mean())  # summed over the classes, averaged over samples
    mean, _ = one_vs_rest_loss(logits, target, kind="focal", class_reduction="mean")
    torch.testing.assert_close(mean, ref.mean())
    loss.backward()
    assert logits.grad[[1, 3]].abs().sum() == 0 and logits.grad[[0, 2]].abs().sum() > 0
    none, zero = one_vs_rest_loss(logits, torch.full((4,), -1))
    assert zero == 0 and none.item() == 0.0 and none.requires_grad
