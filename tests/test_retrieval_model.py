"""Loss terms, stage settings (freezing, monitors) and resume of the cycle-consistent embedder."""

from __future__ import annotations

import copy
from functools import partial

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lit_modules.retrieval import PARTS, TERMS, CycleRetrieval, CycleRetrievalNet, losses
from lit_modules.retrieval.networks import CRITIC_PARTS

ALL_ON = {t: 1.0 for t in TERMS}


def small_net() -> CycleRetrievalNet:
    return CycleRetrievalNet(
        vocab_size=20,
        image_size=16,
        image_dim=8,
        text_dim=8,
        latent_dim=8,
        hidden=16,
        critic_hidden=8,
        word_dim=8,
        decoder_width=4,
        image_backbone={"width": 4, "depth": 2},
    )


def module(stage: str = "joint", trainable=None, weights=None, **kwargs) -> CycleRetrieval:
    """The module as a stage called ``stage`` configures it (``stage`` only names it here)."""
    return CycleRetrieval(
        small_net(),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        trainable=trainable,
        loss_weights=weights or ALL_ON,
        **kwargs,
    )


def batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (n, 7), generator=g)
    ids[:, 5:] = 0
    return {
        "image": torch.randn(n, 3, 16, 16, generator=g),
        "ids": ids,
        "paired": torch.tensor([True, True, True, False, False, False][:n]),
    }


# ----------------------------------------------------------------------------- loss terms
def test_triplet_sum_and_hardest_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # s = [[1, .707], [0, .707]]
    s01, s11 = 2**-0.5, 2**-0.5
    # k=0: [m - 1 + s01]_+ (a0 vs b1) + [m - 1 + s(a1, b0) = 0]_+ ; k=1: [m - s11 + 0]_+ + [m - s11 + s01]_+
    k0 = max(0, 0.2 - 1 + s01) + max(0, 0.2 - 1 + 0.0)
    k1 = max(0, 0.2 - s11 + 0.0) + max(0, 0.2 - s11 + s01)
    ones = torch.ones(2)
    assert float(losses.triplet_ranking(a, b, ones, 0.2)) == pytest.approx((k0 + k1) / 2, abs=1e-6)
    assert float(losses.triplet_ranking(a, b, ones, 0.2, hardest=True)) == pytest.approx(
        (k0 + k1) / 2, abs=1e-6
    )
    c = torch.randn(5, 3)
    assert (
        float(losses.triplet_ranking(c, c, torch.ones(5), 0.2)) <= 0.2 * 8
    )  # sum over 4 negatives, both ways


def test_triplet_row_weights_select_rows() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    w = torch.tensor([1.0, 0, 1, 1, 0, 0])
    keep = w.bool()
    for hardest in (False, True):
        assert float(losses.triplet_ranking(a, b, w, hardest=hardest)) == pytest.approx(
            float(losses.triplet_ranking(a[keep], b[keep], torch.ones(3), hardest=hardest)), abs=1e-6
        )


def test_reconstruction_terms() -> None:
    x = torch.randn(4, 3)
    w = torch.tensor([1.0, 1, 0, 0])
    y = x.clone()
    y[2:] += 10  # unselected rows do not count
    assert float(losses.reconstruction(y, x, w)) == 0.0
    logits = torch.full((1, 3, 5), -20.0)
    ids = torch.tensor([[2, 4, 0]])
    logits[0, 0, 2] = logits[0, 1, 4] = 20.0  # the right tokens; the pad position is ignored
    assert float(losses.token_reconstruction(logits, ids, torch.ones(1))) == pytest.approx(0.0, abs=1e-6)


def test_critic_losses() -> None:
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 0.0]]))
        critic.bias.zero_()
    real, fake, ones = torch.tensor([[2.0, 0.0]]), torch.tensor([[-1.0, 0.0]]), torch.ones(1)
    # linear critic with a unit gradient: no penalty; E[C(fake)] - E[C(real)] = -1 - 2
    assert float(losses.critic_loss(critic, real, fake, ones, ones)) == pytest.approx(-3.0)
    assert float(losses.generator_loss(critic, fake, ones)) == pytest.approx(1.0)
    bce = losses.critic_loss(critic, real, fake, ones, ones, kind="bce")
    expected = nn.functional.softplus(torch.tensor(-2.0)) + nn.functional.softplus(torch.tensor(-1.0))
    assert float(bce) == pytest.approx(float(expected), abs=1e-6)
    with torch.no_grad():
        critic.weight.mul_(3)  # gradient norm 3: penalty 10 * (3 - 1)^2
    assert float(losses.critic_loss(critic, real, fake, ones, ones)) == pytest.approx(-9.0 + 40.0, abs=1e-4)


def test_every_term_is_finite_and_differentiable() -> None:
    model = module()
    b = batch()
    terms = model.generator_terms(b, model._encode(b))
    assert set(terms) == set(TERMS)
    for name, value in terms.items():
        assert torch.isfinite(value), name
    sum(terms.values()).backward()
    assert model.critic_terms(b, {k: v.detach() for k, v in model._encode(b).items()}).isfinite()


def test_use_unpaired_false_ignores_unpaired_rows() -> None:
    model = module(use_unpaired=False)
    b = batch()
    changed = dict(b, image=b["image"].clone(), ids=b["ids"].clone())
    changed["image"][3:] = 5.0
    changed["ids"][3:, :3] = 7
    torch.manual_seed(0)
    with torch.no_grad():
        model.eval()  # batch-norm statistics fixed: rows do not mix
        base = model.generator_terms(b, model._encode(b))
        other = model.generator_terms(changed, model._encode(changed))
    for name in TERMS:
        if name not in ("unpaired_retrieval",):
            assert float(base[name]) == pytest.approx(float(other[name]), abs=1e-5), name
    assert float(base["unpaired_retrieval"]) == 0.0


def test_unknown_terms_or_parts_are_refused() -> None:
    with pytest.raises(ValueError):
        module(weights={"cycles": 1.0})
    with pytest.raises(ValueError):
        module(trainable=["image_encoder", "pixel_critic"])


# ----------------------------------------------------------------------------- stages and resume
class Batches(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, k: int) -> dict:
        b = batch(6)
        return {key: value[k % 6] for key, value in b.items()}


def fit(model: CycleRetrieval, root, max_steps: int, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, DataLoader(Batches(), batch_size=6), ckpt_path=ckpt_path)
    return trainer


def test_stage_switch_freezes_what_it_says(tmp_path) -> None:
    frozen_parts = ["image_encoder", "image_decoder", "text_encoder", "text_decoder"]
    trainable = [p for p in PARTS if p not in frozen_parts]
    model = module("latent", trainable=trainable)
    before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
    buffers = {name: b.clone() for name, b in model.net.named_buffers() if "running" in name}
    fit(model, tmp_path, max_steps=2)
    for name, p in model.net.named_parameters():
        part = name.split(".")[0]
        assert p.requires_grad == (part in trainable), name
        if part in frozen_parts:
            assert torch.equal(p, before[name]), f"frozen {name} changed"
    assert any(
        not torch.equal(p, before[n])
        for n, p in model.net.named_parameters()
        if n.split(".")[0] in CRITIC_PARTS
    )
    assert any(
        not torch.equal(p, before[n])
        for n, p in model.net.named_parameters()
        if n.startswith("image_to_latent")
    )
    for name, b in model.net.named_buffers():
        if name in buffers:
            assert torch.equal(b, buffers[name]), f"batch-norm statistics of frozen {name} changed"
    model.train()
    assert not model.net.image_encoder.training and model.net.image_to_latent.training


def test_resume_restores_every_optimizer_state(tmp_path) -> None:
    model = module()
    trainer = fit(model, tmp_path, max_steps=2)
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["optimizer_states"]
    assert len(saved) == 2 and all(s["state"] for s in saved)  # generator and critic, both with moments

    resumed = module()
    restored = {}

    class Capture(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            restored["states"] = [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]

    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Capture()],
    )
    trainer.fit(resumed, DataLoader(Batches(), batch_size=6), ckpt_path=path)
    for before, after in zip(saved, restored["states"]):
        assert before["state"].keys() == after["state"].keys()
        for key, state in before["state"].items():
            assert torch.equal(state["exp_avg"], after["state"][key]["exp_avg"])
            assert torch.equal(state["step"], after["state"][key]["step"])


class EvalItems(Dataset):
    """Evaluation items as CocoEvalImages gives them: an image and its five captions."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, k: int) -> dict:
        g = torch.Generator().manual_seed(k)
        ids = torch.randint(1, 20, (5, 7), generator=g)
        ids[:, 5:] = 0
        return {"image": torch.randn(3, 16, 16, generator=g), "ids": ids}


def test_validation_logs_the_reconstruction_loss(tmp_path) -> None:
    """val/auto: the auto term over the evaluation images and all five captions of each, averaged
    over the batches by their size; it is what picks the autoencoder stage's checkpoint."""
    model = module("autoencoders", weights={"auto": 1.0}).eval()
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    logged = trainer.validate(model, DataLoader(EvalItems(), batch_size=4))[0]
    items = [EvalItems()[k] for k in range(10)]
    image, ids = torch.stack([i["image"] for i in items]), torch.stack([i["ids"] for i in items]).view(50, 7)
    net = model.net
    expected = 0.0
    with (
        torch.no_grad()
    ):  # per batch (4, 4, 2 images): mean image error + mean token loss of its 5 captions each
        for a, b in ((0, 4), (4, 8), (8, 10)):
            image_error = (net.image_decoder(net.image_encoder(image[a:b])) - image[a:b]).pow(2).mean()
            words = ids[5 * a : 5 * b]
            token_loss = losses.token_reconstruction(
                net.text_decoder(net.text_encoder(words), words), words, torch.ones(len(words))
            )
            expected += float(image_error + token_loss) * (b - a) / 10
    assert logged["val/auto"] == pytest.approx(expected, rel=1e-5) and "val/rsum" in logged


def test_each_stage_declares_its_checkpoint_metric() -> None:
    """The autoencoder stage is picked by its reconstruction (its latent maps are still random), the
    others by rsum; VSE++ (pairs-only retrieval in every stage) by rsum throughout."""
    from experiments.stages import stage_configs
    from tests.test_configs import compose_train

    stages = dict(stage_configs(compose_train("experiment=retrieval")))
    assert (stages["autoencoders"].monitor, stages["autoencoders"].monitor_mode) == ("val/auto", "min")
    assert all(
        (stages[s].monitor, stages[s].monitor_mode) == ("val/rsum", "max") for s in ("latent", "joint")
    )
    assert list(stages["autoencoders"].model.trainable) == [
        "image_encoder",
        "image_decoder",
        "text_encoder",
        "text_decoder",
    ]
    for experiment, joint in (("retrieval_coco", True), ("retrieval", False)):
        cycle = dict(stage_configs(compose_train(f"experiment={experiment}")))
        vsepp = dict(stage_configs(compose_train(f"experiment={experiment}", "ablation=retrieval_vsepp")))
        assert all(c.monitor == "val/rsum" and c.monitor_mode == "max" for c in vsepp.values())
        # the warm-up stages use the sum over negatives; the joint stage the experiment's loss, every row
        assert [c.model.hardest_negative for c in vsepp.values()] == [False, False, joint]
        assert cycle["joint"].model.hardest_negative == joint
        assert vsepp["joint"].model.hardest_negative_after == cycle["joint"].model.hardest_negative_after


def test_hardest_negative_takes_over_after_the_warm_up_epochs() -> None:
    from types import SimpleNamespace

    model = module(weights={"paired_retrieval": 1.0}, hardest_negative=True, hardest_negative_after=2)
    seen = []
    for epoch in range(4):
        model._trainer = SimpleNamespace(current_epoch=epoch)
        seen.append(model.uses_hardest_negative)
    model._trainer = None
    assert seen == [False, False, True, True]


def test_predictor_ranks_candidate_captions(tmp_path) -> None:
    from PIL import Image

    from datamodules.preprocessing.images import ImageTransforms
    from datamodules.preprocessing.text import WordVocabulary
    from lit_modules.retrieval.predict import predict_images

    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "a.jpg")
    vocabulary = WordVocabulary.build(["a red circle", "a blue star"])
    spec = {
        "data": {
            "transforms": ImageTransforms(16, 16).describe(),
            "vocabulary": vocabulary.state(),
            "max_length": 8,
        }
    }
    net = small_net().eval()
    rows = list(
        predict_images(net, spec, [tmp_path / "a.jpg"], tmp_path, {"a.jpg": ["a red circle", "a blue star"]})
    )
    assert len(rows) == 1 and sorted(rows[0]["captions"]) == ["a blue star", "a red circle"]
    assert rows[0]["scores"] == sorted(rows[0]["scores"], reverse=True) and len(rows[0]["embedding"]) == 8


# ----------------------------------------------------------------------------- prior, critics, collapse
def test_mmd_to_the_prior_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    z, prior = torch.randn(5, 3, generator=g) + 1.0, torch.randn(4, 3, generator=g)
    weight = torch.tensor([1.0, 1, 0, 1, 1])  # row 2 left out
    kept = z[weight.bool()]

    def k(a, b, c):
        return c / (c + float(((a - b) ** 2).sum()))

    expected = 0.0
    for scale in losses.MMD_SCALES:
        c = 2 * 3 * scale
        zz = [k(a, b, c) for i, a in enumerate(kept) for j, b in enumerate(kept) if i != j]
        pp = [k(a, b, c) for i, a in enumerate(prior) for j, b in enumerate(prior) if i != j]
        zp = [k(a, b, c) for a in kept for b in prior]
        expected += sum(zz) / len(zz) + sum(pp) / len(pp) - 2 * sum(zp) / len(zp)
    assert float(losses.mmd_to_prior(z, weight, prior)) == pytest.approx(expected, rel=1e-5)
    ones, samples = torch.ones(300), torch.randn(300, 3, generator=g)
    near = losses.mmd_to_prior(torch.randn(300, 3, generator=g), ones, samples)  # prior vs prior: ~0
    far = losses.mmd_to_prior(torch.randn(300, 3, generator=g) + 2.0, ones, samples)
    assert abs(float(near)) < 0.05 < float(far)


def test_wasserstein_generator_value_and_drift_penalty() -> None:
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, 0.0]]))
        critic.bias.fill_(30.0)  # a drifted output level
    real, fake, ones = torch.tensor([[2.0, 0.0]]), torch.tensor([[-1.0, 0.0]]), torch.ones(1)
    # E[C(real)] - E[C(fake)] = 32 - 29: the level cancels; without real: -E[C(fake)] = -29
    assert float(losses.generator_loss(critic, fake, ones, real=real)) == pytest.approx(3.0)
    assert float(losses.generator_loss(critic, fake, ones)) == pytest.approx(-29.0)
    fake.requires_grad_(True)
    losses.generator_loss(critic, fake, ones, real=real).backward()
    assert fake.grad.tolist() == [[-1.0, 0.0]]  # the gradient of -E[C(fake)]
    plain = float(losses.critic_loss(critic, real, fake, ones, ones))
    drifted = float(losses.critic_loss(critic, real, fake, ones, ones, drift_weight=1e-3))
    assert drifted - plain == pytest.approx(1e-3 * 32.0**2, rel=1e-4)


def test_parts_no_active_term_uses_stay_frozen() -> None:
    model = module(weights={"paired_retrieval": 1.0})
    assert sorted(model.trainable) == sorted(
        ["image_encoder", "text_encoder", "image_to_latent", "text_to_latent"]
    )
    assert not any(p.requires_grad for p in model.net.prior_critic.parameters())
    jwae = module(weights={"embedding_auto": 1.0, "prior_matching": 1.0, "paired_retrieval": 1.0})
    assert "prior_critic" in jwae.trainable and "image_domain_critic" not in jwae.trainable
    assert jwae.critic_terms_on == ["prior_matching"]
    mmd = module(weights={"prior_matching": 1.0}, prior_divergence="mmd")
    assert not mmd.adversarial_on and "prior_critic" not in mmd.trainable


def test_critic_steps_every_third_batch(tmp_path) -> None:
    model = module(
        weights={"paired_retrieval": 1.0, "prior_matching": 1.0}, critic_every=3, adversarial="bce"
    )
    trainer = fit(model, tmp_path, max_steps=6)  # max_steps counts both optimisers' steps
    generator, critic = trainer.optimizers
    steps = [int(next(iter(o.state.values()))["step"]) for o in (generator, critic)]
    assert steps[1] == (steps[0] + 2) // 3 and steps[0] >= 3


def test_collapsed_hardest_negative_loss_is_reported(tmp_path, caplog) -> None:
    model = module(weights={"paired_retrieval": 1.0}, hardest_negative=True)
    with torch.no_grad():  # every embedding the same vector: all similarities equal
        for part in (model.net.image_to_latent, model.net.text_to_latent):
            part[-1].weight.zero_()
            part[-1].bias.fill_(1.0)
    with caplog.at_level("WARNING"):
        trainer = fit(model, tmp_path, max_steps=2)
    assert float(trainer.callback_metrics["train/retrieval_collapsed"]) == 1.0
    assert float(trainer.callback_metrics["train/latent_spread"]) < 1e-3
    assert "hardest-negative loss collapsed" in caplog.text
    healthy = fit(module(weights={"paired_retrieval": 1.0}, hardest_negative=True), tmp_path, max_steps=2)
    assert float(healthy.callback_metrics["train/retrieval_collapsed"]) == 0.0
