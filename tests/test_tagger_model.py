"""The tagger's parts and staged training on hand-made tensors (no data on disk)."""

import functools

import pytest
import torch

from lit_modules.backbones import build_image_classifier
from lit_modules.tagger import PARTS, MultiLabelTagger, TaggerNet, apply_rule


def make_net(**kwargs) -> TaggerNet:
    return TaggerNet(
        build_image_classifier("small_cnn", 5, width=4),
        num_labels=5,
        num_tags=12,
        tag_hidden=[8],
        count_hidden=[8],
        **kwargs,
    )


def make_module(stage: str, net: TaggerNet | None = None) -> MultiLabelTagger:
    return MultiLabelTagger(
        net or make_net(), optimizer=functools.partial(torch.optim.AdamW, lr=1e-3), stage=stage
    )


def test_net_outputs():
    out = make_net()(torch.randn(3, 3, 16, 16), torch.zeros(3, 12))
    assert out["image_logits"].shape == out["tag_logits"].shape == out["fusion_logits"].shape == (3, 5)
    assert out["count"].shape == (3,)
    assert torch.allclose(out["count"], out["count_norm"] * 10.0)


@pytest.mark.parametrize("stage", PARTS)
def test_stage_trains_only_its_part(stage):
    module = make_module(stage)
    for part in PARTS:
        params = list(getattr(module.net, part).parameters())
        assert all(p.requires_grad == (part == stage) for p in params), part
    (config,) = module.configure_optimizers()
    optimizer = config["optimizer"]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in getattr(module.net, stage).parameters()}
    module.train()
    for part in PARTS:  # frozen parts keep eval mode: batch-norm statistics do not move
        assert getattr(module.net, part).training == (part == stage)


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_frozen_image_cnn_statistics_do_not_move_in_later_stages():
    module = make_module("fusion")
    module.train()
    before = {k: v.clone() for k, v in module.net.image_cnn.state_dict().items()}
    batch = {"image": torch.randn(4, 3, 16, 16), "tags": torch.zeros(4, 12), "labels": torch.ones(4, 5)}
    module.training_step(batch, 0).backward()
    for k, v in module.net.image_cnn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_rules_follow_trained_parts():
    net = make_net()
    module = make_module("image_cnn", net)
    module._refresh_active()
    assert module.rules == ["image_topk", "image_threshold"]
    for part in ("image_cnn", "tag_mlp", "fusion"):
        net.mark_trained(part)
    module = make_module("label_count", net)
    module._refresh_active()
    assert module.rules == [
        "image_topk",
        "tags_topk",
        "fusion_topk",
        "composite",
        "image_threshold",
        "tags_threshold",
        "fusion_threshold",
    ]
    assert module.selection_rule == "composite"
    image_only = make_net()
    image_only.mark_trained("image_cnn")
    module = make_module("image_label_count", image_only)
    module._refresh_active()
    assert module.rules == ["image_topk", "image_count", "image_threshold"]
    assert module.selection_rule == "image_count"
    net.mark_trained("label_count")  # the Table 5.1 run: one set of parts scores every row
    module = make_module("image_label_count", net)
    module._refresh_active()
    assert {"image_topk", "fusion_topk", "image_count", "composite"} <= set(module.rules)


def test_composite_rule_takes_top_predicted_count_of_fusion():
    out = {
        "fusion_logits": torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.8, 0.1, 0.2, 0.7]]),
        "image_logits": torch.zeros(2, 4),
        "count": torch.tensor([2.4, 0.2]),  # -> k = 2 and (at least) 1
    }
    assert apply_rule(out, "composite").tolist() == [[0, 1, 1, 0], [1, 0, 0, 0]]
    assert apply_rule(out, "fusion_topk", top_k=3).tolist() == [[0, 1, 1, 1], [1, 0, 1, 1]]
    # threshold on probabilities: sigmoid(logit) > 0.6  <=>  logit > 0.405
    assert apply_rule(out, "fusion_threshold", alpha=0.6).tolist() == [[0, 1, 1, 0], [1, 0, 0, 1]]


def test_image_count_regressor_sees_the_image_only():
    net = make_net(count_dropout=0.0)
    module = make_module("image_label_count", net)
    module.train()  # the frozen image CNN in eval mode
    images, labels = torch.randn(4, 3, 16, 16), (torch.rand(4, 5) < 0.5).float()
    batch = {"image": images, "tags": torch.zeros(4, 12), "labels": labels}
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        expected = net.image_label_count(net.image_logits(images).sigmoid())
    assert torch.allclose(loss, torch.nn.functional.mse_loss(expected, labels.sum(1) / 10.0))  # eq. 3.2
    loss.backward()
    for part in PARTS:
        grads = [p.grad for p in getattr(net, part).parameters()]
        assert all((g is not None) == (part == "image_label_count") for g in grads), part
    net.eval()
    with torch.no_grad():
        a, b = net(images, torch.zeros(4, 12)), net(images, torch.ones(4, 12))
    assert torch.equal(a["image_count"], b["image_count"]) and not torch.equal(a["count"], b["count"])


@pytest.mark.parametrize(
    ("rounding", "sizes"),
    [("half_even", [2, 4, 1]), ("half_up", [3, 4, 1]), ("floor", [2, 3, 1]), ("ceil", [3, 4, 1])],
)
def test_count_rounding_is_a_setting(rounding, sizes):
    out = {"fusion_logits": torch.randn(3, 5), "count": torch.tensor([2.5, 3.5, 0.4])}
    assert apply_rule(out, "composite", count_rounding=rounding).sum(1).tolist() == sizes
    module = MultiLabelTagger(
        make_net(),
        optimizer=functools.partial(torch.optim.AdamW),
        stage="label_count",
        count_rounding=rounding,
    )
    assert module.predict_labels(out, "composite").sum(1).tolist() == sizes
    assert module.export_metadata()["count_rounding"] == rounding


def counting_cnn_calls(module: MultiLabelTagger) -> list[int]:
    """Batch sizes the image CNN is called with, from now on."""
    calls: list[int] = []
    module.net.image_cnn.register_forward_hook(lambda mod, inputs, out: calls.append(len(inputs[0])))
    return calls


@pytest.mark.parametrize(
    ("pipeline", "train_cached"), [({"resize": 16, "crop": 16}, True), ({"k": 1.0, "hflip": 0.5}, False)]
)
def test_frozen_cnn_runs_once_per_item_unless_training_images_are_augmented(pipeline, train_cached):
    torch.manual_seed(0)
    cached = MultiLabelTagger(
        make_net(),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        stage="fusion",
        image_pipeline=pipeline,
    ).train()
    plain = make_module("fusion", make_net())
    plain.load_state_dict(cached.state_dict())
    plain.hparams.cache_frozen_image_logits = False
    plain.train()
    images = torch.randn(6, 3, 16, 16)
    calls = counting_cnn_calls(cached)

    def batch(rows):
        rows = torch.tensor(rows)
        return {"image": images[rows], "tags": torch.zeros(len(rows), 12), "index": rows}

    for split in ("train", "val"):
        calls.clear()
        first, again = cached._outputs(batch([4, 0, 2]), split), cached._outputs(batch([2, 5, 4]), split)
        reference = plain(images[[2, 5, 4]], torch.zeros(3, 12))
        for key in ("image_logits", "fusion_logits", "count"):
            assert torch.allclose(again[key], reference[key], atol=1e-6), key
        assert torch.equal(first["image_logits"][2], again["image_logits"][0])
        # Cached: the second batch runs the CNN on its one unseen item (5) only.
        assert calls == ([3, 1] if split == "val" or train_cached else [3, 3]), split

    image_cnn_stage = make_module("image_cnn")  # a CNN that trains is never cached
    calls = counting_cnn_calls(image_cnn_stage)
    image_cnn_stage._outputs(batch([0, 1]), "val"), image_cnn_stage._outputs(batch([0, 1]), "val")
    assert calls == [2, 2]
