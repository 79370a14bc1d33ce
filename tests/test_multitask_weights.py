"""DBN's task-level and epoch-level weights, MGDA's min-norm weights, the per-task scores."""

import itertools

import pytest
import torch
from sklearn.metrics import f1_score

from lit_modules.graph_fusion import DynamicTaskWeights, min_norm_weights


def test_step_update_moves_weight_to_the_slower_task_and_keeps_the_sum():
    """Toy two-task problem: task 1 learns fast (its loss falls to 20 %), task 2 slowly (90 %);
    equal gradient norms. The slow task must gain weight; the weights always sum to 2."""
    dtw = DynamicTaskWeights(2, alpha=1.0, lr=0.05)
    present = torch.tensor([True, True])
    dtw.record(torch.tensor([1.0, 1.0]), present)
    for t in range(1, 30):
        losses = torch.tensor([0.2 ** (t / 29), 0.9 ** (t / 29)])
        grad_norms = dtw.weights * torch.tensor([1.0, 1.0])  # G_W^(f) = w_f ||grad L_f||
        dtw.record(losses, present)
        dtw.step_update(grad_norms, losses, present)
        assert dtw.weights.sum().item() == pytest.approx(2.0)
    assert dtw.weights[1] > dtw.weights[0] > 0


def test_step_update_gradient_by_hand():
    dtw = DynamicTaskWeights(2, alpha=1.0, lr=0.1)
    present = torch.tensor([True, True])
    dtw.record(torch.tensor([2.0, 1.0]), present)  # L(0)
    dtw.inverse_positive_share.copy_(torch.tensor([1.0, 1.0]))
    # L(t) = (1, 1): ratios (0.5, 1) -> r = (2/3, 4/3); G = (1, 3) -> mean 2; targets (4/3, 8/3)
    l_d = dtw.step_update(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]), present)
    assert l_d.item() == pytest.approx(1 / 3 + 1 / 3)
    # dL_D/dw = sign(G - target) * G / w = (-1, +3): w = (1.1, 0.7), renormalised to sum 2
    torch.testing.assert_close(dtw.weights, torch.tensor([1.1, 0.7]) * 2 / 1.8)


def test_positive_shares_weight_the_rare_task_more():
    dtw = DynamicTaskWeights(3)
    dtw.set_positive_counts([500, 250, 100], total=1000)
    share = dtw.inverse_positive_share
    assert share.mean().item() == pytest.approx(1.0) and share[2] > share[1] > share[0]


def test_epoch_rebalance_by_hand():
    dtw = DynamicTaskWeights(3)
    present = torch.tensor([True, True, True])
    for losses in ([1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]):
        dtw.record(torch.tensor(losses), present)
    weights = dtw.epoch_rebalance()
    # means (1, 2, 4) -> max / mean = (4, 2, 1) -> x 3 / 7
    torch.testing.assert_close(weights, torch.tensor([4.0, 2.0, 1.0]) * 3 / 7)
    assert dtw.epoch_loss_count.sum() == 0


def test_task_weight_state_round_trips_through_a_state_dict():
    dtw = DynamicTaskWeights(2)
    dtw.record(torch.tensor([1.0, 3.0]), torch.tensor([True, True]))
    dtw.weights.copy_(torch.tensor([0.5, 1.5]))
    fresh = DynamicTaskWeights(2)
    fresh.load_state_dict(dtw.state_dict())
    torch.testing.assert_close(fresh.weights, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(fresh.initial_losses, torch.tensor([1.0, 3.0]))


def test_mgda_two_known_gradients():
    torch.testing.assert_close(
        min_norm_weights([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]), torch.tensor([0.5, 0.5])
    )
    # the min-norm point of the segment between (1, 0) and (1, 1) is (1, 0)
    torch.testing.assert_close(
        min_norm_weights([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])]), torch.tensor([1.0, 0.0])
    )
    # (2, 0) and (0, 1): alpha = 1/5 -> (0.4, 0.8)
    torch.testing.assert_close(
        min_norm_weights([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])]), torch.tensor([0.2, 0.8])
    )


def test_mgda_frank_wolfe_matches_a_grid_search():
    g = torch.Generator().manual_seed(1)
    grads = torch.randn(3, 5, generator=g) + torch.tensor([1.0, 0, 0, 0, 0])
    alpha = min_norm_weights(grads)
    assert alpha.min() >= 0 and alpha.sum().item() == pytest.approx(1.0, abs=1e-5)
    best = min(
        (torch.tensor([a, b, 1 - a - b]) @ grads).norm().item()
        for a, b in itertools.product(torch.linspace(0, 1, 101).tolist(), repeat=2)
        if a + b <= 1
    )
    assert (alpha @ grads).norm().item() <= best + 1e-3


def test_multitask_scores_match_sklearn_per_task_with_missing_labels():
    from sklearn.metrics import average_precision_score

    from lit_modules.metrics import MultiTaskScores

    g = torch.Generator().manual_seed(3)
    tasks = {"a": 2, "b": 4}
    n = 120
    labels = torch.stack([torch.randint(0, 2, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)], 1)
    labels[::7, 0] = -1
    labels[::5, 1] = -1
    logits = {"a": torch.randn(n, 2, generator=g), "b": torch.randn(n, 4, generator=g)}
    logits["b"][torch.arange(n), labels[:, 1].clamp_min(0)] += 1.0  # better than chance
    losses = torch.rand(3, 2, generator=g)
    metric = MultiTaskScores(tasks)
    batches = [slice(0, 50), slice(50, 90), slice(90, n)]
    for b, rows in enumerate(batches):
        metric.update({t: v[rows] for t, v in logits.items()}, labels[rows], losses[b])
    out = metric.compute()
    for f, (task, c) in enumerate(tasks.items()):
        keep = labels[:, f] >= 0
        y, scores = labels[keep, f].numpy(), logits[task][keep]
        p = scores.argmax(1).numpy()
        assert out[f"{task}/F1_macro"].item() == pytest.approx(f1_score(y, p, average="macro"), abs=1e-6)
        assert out[f"{task}/F1_weighted"].item() == pytest.approx(
            f1_score(y, p, average="weighted"), abs=1e-6
        )
        assert out[f"{task}/accuracy"].item() == pytest.approx((y == p).mean(), abs=1e-6)
        onehot_p, onehot_y = torch.eye(c)[p], torch.eye(c)[y]  # Hamming loss over the C one-vs-rest outputs
        assert out[f"{task}/HL"].item() == pytest.approx(
            (onehot_p != onehot_y).float().mean().item(), abs=1e-6
        )
        onehot = torch.nn.functional.one_hot(torch.as_tensor(y), c).numpy()
        present = onehot.sum(0) > 0
        ap = average_precision_score(
            onehot[:, present], scores.sigmoid().numpy()[:, present], average="macro"
        )
        assert out[f"{task}/MAP"].item() == pytest.approx(ap, abs=1e-6)
        # the task loss: batch means weighted by each batch's labelled samples
        counts = torch.tensor([int((labels[rows, f] >= 0).sum()) for rows in batches], dtype=torch.float)
        expected = float((losses[:, f] * counts).sum() / counts.sum())
        assert out[f"{task}/loss"].item() == pytest.approx(expected, rel=1e-6)
    assert out["F1_macro"].item() == pytest.approx(
        (out["a/F1_macro"] + out["b/F1_macro"]).item() / 2, abs=1e-6
    )


def _epoch_of(dtw, means):
    present = torch.ones(len(means), dtype=torch.bool)
    for _ in range(2):
        dtw.record(torch.tensor(means), present)


def test_epoch_rebalance_readings_by_hand():
    """c = max mean / mean, applied as each reading says (the weights and factors sum to T)."""
    means, c = [1.0, 2.0, 4.0], torch.tensor([4.0, 2.0, 1.0])
    start = torch.tensor([1.5, 1.0, 0.5])
    out = {}
    for mode in ("multiply", "replace", "factor", "none"):
        dtw = DynamicTaskWeights(3)
        dtw.weights.copy_(start)
        _epoch_of(dtw, means)
        used = dtw.epoch_rebalance(mode)
        out[mode] = (dtw.weights.clone(), dtw.epoch_factors.clone(), used)
        assert dtw.epoch_loss_count.sum() == 0
    product = start * c  # (6, 2, 0.5)
    torch.testing.assert_close(out["multiply"][0], product * 3 / product.sum())
    torch.testing.assert_close(out["replace"][0], c * 3 / 7)
    torch.testing.assert_close(out["factor"][0], start)  # the task level's weights go on
    torch.testing.assert_close(out["factor"][1], c * 3 / 7)
    torch.testing.assert_close(out["factor"][2], start * c * 3 / 7)
    torch.testing.assert_close(out["none"][0], start)
    for mode in ("multiply", "replace", "none"):
        torch.testing.assert_close(out[mode][1], torch.ones(3))
    # a task without labels in the epoch: nothing changes
    dtw = DynamicTaskWeights(2)
    dtw.record(torch.tensor([1.0, 0.0]), torch.tensor([True, False]))
    torch.testing.assert_close(dtw.epoch_rebalance("multiply"), torch.ones(2))
    with pytest.raises(ValueError, match="epoch_rebalance"):
        dtw.epoch_rebalance("reset")


def test_min_norm_from_the_gram_matrix_equals_from_the_gradients():
    from lit_modules.graph_fusion.multitask import min_norm_weights_from_gram

    g = torch.Generator().manual_seed(4)
    for t in (2, 3, 4):
        grads = torch.randn(t, 7, generator=g)
        torch.testing.assert_close(min_norm_weights_from_gram(grads @ grads.T), min_norm_weights(grads))


def _tiny_module(**kwargs):
    from lit_modules.graph_fusion import GraphFusionMultiTask, MultimodalMultiTaskNet
    from lit_modules.text_encoders import TokenBagEncoder

    torch.manual_seed(0)
    net = MultimodalMultiTaskNet(
        {"a": 2, "b": 8},
        ["text", "extra"],
        text_encoder=TokenBagEncoder(20, 6),
        extra_encoder=TokenBagEncoder(5, 6),
        fusion={"kind": "concat"},
    )
    return GraphFusionMultiTask(net, optimizer=None, **kwargs)


def _tiny_batch(n=12):
    g = torch.Generator().manual_seed(1)
    labels = torch.stack([torch.randint(0, 2, (n,), generator=g), torch.randint(0, 8, (n,), generator=g)], 1)
    labels[::4, 1] = -1
    return {
        "text_ids": torch.randint(1, 20, (n, 4), generator=g),
        "extra_ids": torch.randint(1, 5, (n, 1), generator=g),
        "labels": labels,
    }


@pytest.mark.parametrize("reduction, scale", [("mean", lambda c: c**0.5), ("sum", lambda c: c**-0.5)])
def test_dbn_head_gradient_norm_is_per_output(reduction, scale):
    """G_W^(f) = ||grad_W (w_f L_f)||_F times sqrt(C_f) (averaged terms) or / sqrt(C_f) (summed terms):
    the root mean square over the task's outputs, computed here by hand with torch.autograd."""
    from lit_modules.losses import one_vs_rest_loss

    module = _tiny_module(class_reduction=reduction)
    batch = _tiny_batch()
    captured = {}
    module.task_weights.step_update = lambda norms, losses, present: (
        captured.update(norms=norms) or torch.zeros(())
    )
    out = module(batch)
    losses, counts = module.task_losses(out["logits"], batch["labels"])
    scaled, mean, total = module._global_batch(losses, counts)
    torch.testing.assert_close(scaled, losses)  # one process: the batch means themselves
    module._dbn_loss(scaled, mean, total > 0)
    for f, (task, c) in enumerate((("a", 2), ("b", 8))):
        loss, _ = one_vs_rest_loss(
            out["logits"][task], batch["labels"][:, f], kind="focal", class_reduction=reduction
        )
        (grad,) = torch.autograd.grad(loss, module.net.heads[task].weight, retain_graph=True)
        assert captured["norms"][f].item() == pytest.approx(grad.norm().item() * scale(c), rel=1e-5)
    full = _tiny_module(class_reduction=reduction, dbn_grad_norm="full")
    assert torch.equal(full.grad_norm_scale, torch.ones(2))


def test_mgda_and_dbn_weights_from_one_process_batch():
    """The module's MGDA weights are the min-norm weights of the task gradients w.r.t. G (by hand)."""
    module = _tiny_module(multitask="mgda")
    batch = _tiny_batch()
    out = module(batch)
    losses, counts = module.task_losses(out["logits"], batch["labels"])
    scaled, mean, total = module._global_batch(losses, counts)
    total_loss, alpha = module._mgda_loss(scaled, mean, total > 0, out["features"])
    grads = [
        torch.autograd.grad(losses[f], out["features"], retain_graph=True)[0].reshape(-1) for f in range(2)
    ]
    torch.testing.assert_close(alpha, 2 * min_norm_weights(grads))
    torch.testing.assert_close(total_loss, (alpha * losses).sum())
