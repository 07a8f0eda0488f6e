"""ALUM's pure functions: hand computations, a float64 re-derivation, and the properties a user checks: the
default perturbation is adversarial (gain), K helps, the noise control is not, δ stays in its ball."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pretrain_tiny import tiny_batch, tiny_model

from pretrain.alum import (
    VARIANTS,
    AlumConfig,
    adversarial_loss,
    ascent_step,
    init_delta,
    kl,
    regularized_loss,
    sym_kl,
)
from pretrain.alum_stats import AlumStats
from pretrain.model import embed, encode_from

torch.set_num_threads(1)


def test_sym_kl_matches_hand_computation():
    p_logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])  # p = (1/4, 3/4), (1/2, 1/2)
    q_logits = torch.tensor([[0.0, 0.0], [math.log(4.0), 0.0]])  # q = (1/2, 1/2), (4/5, 1/5)
    rows = [((0.25, 0.75), (0.5, 0.5)), ((0.5, 0.5), (0.8, 0.2))]
    expected = []
    for p, q in rows:
        kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q))
        kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q))
        expected.append(kl_pq + kl_qp)
    assert sym_kl(p_logits, q_logits).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert sym_kl(q_logits, p_logits).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    p0, q0 = rows[0]
    assert kl(p_logits[:1], q_logits[:1]).item() == pytest.approx(
        sum(a * math.log(a / b) for a, b in zip(p0, q0)), rel=1e-6)
    assert sym_kl(p_logits, p_logits).item() == 0.0


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="alum.norm"):
        AlumConfig(norm="l1")
    with pytest.raises(ValueError, match="alum.steps"):
        AlumConfig(steps=-1)
    with pytest.raises(ValueError, match="alum.site"):
        AlumConfig(site="layer3")
    with pytest.raises(ValueError, match="alum.variant"):
        AlumConfig.from_variant("best")
    with pytest.raises(ValueError, match="alum.units"):
        AlumConfig(norm="linf", units="relative")


def test_variants_resolve_and_overrides_win():
    assert AlumConfig.from_variant("default") == AlumConfig()
    paper = AlumConfig.from_variant("paper", alpha=1.0)
    assert (paper.eps, paper.step_size, paper.init_std, paper.norm, paper.units, paper.alpha) == \
        (1e-5, 1e-3, 1e-5, "linf", "absolute", 1.0)
    authors = AlumConfig.from_variant("authors")
    assert authors.norm == "token_linf" and authors.ascent_loss == "kl" and not authors.embed_grad
    noise = AlumConfig.from_variant("noise")
    # The control has the default's per-token size and no ascent.
    assert noise.steps == 0 and noise.init == "sphere" and (noise.eps, noise.units) == (AlumConfig().eps, "relative")
    assert AlumConfig.from_variant("default", eps=0.2).eps == 0.2


def test_pretrain_and_finetune_configs_record_every_resolved_value():
    from finetune.config import FinetuneAlumSection
    from pretrain.config import AlumSection

    for name in VARIANTS:
        section = AlumSection(variant=name, alpha=1.0)
        assert section.build() == AlumConfig.from_variant(name, alpha=1.0)
        assert set(section.model_dump()) == set(AlumConfig().to_dict())  # every field, resolved, in config.json
    assert AlumSection(variant="paper", eps=1e-3).build().eps == 1e-3  # explicit key beats the variant
    opts = FinetuneAlumSection(enabled=True, variant="noise")
    assert opts.build() == AlumConfig.from_variant("noise", alpha=1.0)


def _task(seed: int = 0, dtype=torch.float64, train_steps: int = 0, dropout: float = 0.0):
    """A tiny encoder as forward_fn over embedding outputs, and its clean logits at masked rows.

    ``train_steps`` seeded AdamW steps of plain MLM first, so that the model's outputs are not uniform.
    """
    model = tiny_model(seed=seed, dropout=dropout)
    if train_steps:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for s in range(train_steps):
            torch.manual_seed(s)
            model(**tiny_batch(batch=8, seed=100 + s)).loss.backward()
            opt.step()
            opt.zero_grad()
    model = model.to(dtype)
    batch = tiny_batch(seed=seed)
    rows = (batch["mlm_labels"].reshape(-1) != -100).nonzero(as_tuple=True)[0]

    def forward_fn(embeds):
        hidden = encode_from(model.backbone, embeds, batch["attention_mask"], "embedding_output")
        return model.mlm_head(hidden.reshape(-1, 32)[rows])

    embeds = embed(model.backbone, batch["input_ids"], batch["token_type_ids"], "embedding_output")
    return model, embeds, forward_fn(embeds), forward_fn, batch


@pytest.fixture(scope="module")
def trained():
    """A tiny model after 30 seeded MLM steps (float32, dropout 0), and 4 evaluation batches."""
    model = tiny_model(seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for s in range(30):
        torch.manual_seed(s)
        model(**tiny_batch(batch=8, seed=100 + s)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model, [tiny_batch(batch=4, seed=500 + i) for i in range(4)]


def _gains(trained, cfg: AlumConfig) -> list[float]:
    model, batches = trained
    out = []
    for i, batch in enumerate(batches):
        t = model.task(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["mlm_labels"])
        g = torch.Generator().manual_seed(i)
        res = adversarial_loss(t.embeds, t.logits, t.logits_from, cfg, generator=g,
                               token_mask=batch["attention_mask"], measure_gain=True)
        out.append(float(res.ascent_gain))
    return out


def test_default_perturbation_is_adversarial_and_more_steps_help(trained):
    k1 = _gains(trained, AlumConfig())
    k2 = _gains(trained, AlumConfig(steps=2))
    assert sum(k1) / len(k1) >= 5.0, k1
    assert sum(k2) / len(k2) >= sum(k1) / len(k1), (k1, k2)


def test_noise_control_has_gain_one_and_authors_normalisation_is_noise(trained):
    noise = _gains(trained, AlumConfig.from_variant("noise"))
    assert 0.7 <= sum(noise) / len(noise) <= 1.4, noise
    # The released plugin's δ/max|δ| step: σ·randn ≫ η·g, so δ keeps its random direction (issue 16).
    authors = _gains(trained, AlumConfig.from_variant("authors"))
    assert sum(authors) / len(authors) < 2.0, authors


def test_paper_variant_steers_but_is_tiny(trained):
    model, batches = trained
    batch = batches[0]
    t = model.task(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["mlm_labels"])
    res = adversarial_loss(t.embeds, t.logits, t.logits_from, AlumConfig.from_variant("paper"),
                           generator=torch.Generator().manual_seed(0), measure_gain=True)
    assert res.delta.abs().max().item() <= 1e-5 * (1 + 1e-6)
    assert res.loss.item() < 1e-6  # next to an MLM loss of ~4: negligible even at α = 10


@pytest.mark.parametrize("cfg", [
    AlumConfig(), AlumConfig(steps=3, eps=0.05, step_size=0.05),
    AlumConfig(norm="l2", units="absolute", eps=0.2, step_size=0.2, init_std=1e-2),
    AlumConfig(norm="linf", units="absolute", eps=0.02, step_size=0.02, init_std=1e-3),
    AlumConfig.from_variant("noise"), AlumConfig.from_variant("paper"),
], ids=["default", "default-K3", "l2-absolute", "linf-absolute", "noise", "paper"])
def test_projection_keeps_every_token_inside_its_ball(cfg):
    _, embeds, clean, forward_fn, batch = _task()
    res = adversarial_loss(embeds, clean, forward_fn, cfg, generator=torch.Generator().manual_seed(0),
                           token_mask=batch["attention_mask"])
    if cfg.norm == "linf":
        assert res.delta.abs().amax(-1).max().item() <= cfg.eps * (1 + 1e-9)
        return
    radius = cfg.eps * (embeds.detach().norm(dim=-1) if cfg.units == "relative" else 1.0)
    assert (res.delta.norm(dim=-1) <= radius * (1 + 1e-6)).all()
    assert (res.delta.norm(dim=-1)[batch["attention_mask"] == 0] == 0).all()  # padding is never perturbed
    if cfg.units == "relative":
        assert res.delta_ratio.item() <= cfg.eps * (1 + 1e-6)


def test_zero_radius_gives_zero_adversarial_loss():
    _, embeds, clean, forward_fn, _ = _task()
    for cfg in (AlumConfig(eps=0.0), AlumConfig(eps=0.0, steps=2), AlumConfig.from_variant("noise", eps=0.0)):
        res = adversarial_loss(embeds, clean, forward_fn, cfg, generator=torch.Generator().manual_seed(1))
        assert res.loss.item() == 0.0
        assert not res.delta.any()


def _reference_default(embeds, clean, forward_fn, cfg, seed, mask):
    """Algorithm 1 with the default's per-token relative ℓ2 ball, written out longhand, in float64."""
    x = embeds.detach()
    unit = x.norm(dim=-1, keepdim=True)  # ‖x_t‖
    noise = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(seed)).double()
    delta = noise * cfg.init_std / math.sqrt(x.size(-1)) * unit * mask
    for _ in range(cfg.steps):
        delta = delta.clone().requires_grad_(True)
        lp, lq = F.log_softmax(forward_fn(x + delta), -1), F.log_softmax(clean.detach(), -1)
        obj = ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean()
        (g,) = torch.autograd.grad(obj, delta)
        n = g.norm(dim=-1, keepdim=True)
        new = delta.detach() + cfg.step_size * unit * torch.where(n > 0, g / n, 0.0)
        r = new.norm(dim=-1, keepdim=True)
        delta = torch.where(r > cfg.eps * unit, new * cfg.eps * unit / r, new) * mask
    lp, lq = F.log_softmax(forward_fn(embeds + delta), -1), F.log_softmax(clean, -1)
    return ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1).mean(), delta


@pytest.mark.parametrize("steps", [1, 2])
def test_parameter_gradient_matches_a_float64_rederivation(steps):
    """∇_θ of L + α·l_sym at the default's δ, ours (regularized_loss) against a longhand float64 version."""
    cfg = AlumConfig(steps=steps, alpha=3.0)
    grads = []
    for which in ("ours", "reference"):
        model, embeds, clean, forward_fn, batch = _task(train_steps=5)
        mask = batch["attention_mask"].unsqueeze(-1).double()
        rows = batch["mlm_labels"].reshape(-1) != -100
        task = F.cross_entropy(clean, batch["mlm_labels"].reshape(-1)[rows])
        if which == "ours":
            reg = regularized_loss(task, embeds, clean, forward_fn, cfg, generator=torch.Generator().manual_seed(4),
                                   token_mask=batch["attention_mask"])
            loss, delta = reg.loss, reg.adv.delta
        else:
            adv, delta = _reference_default(embeds, clean, forward_fn, cfg, 4, mask)
            loss = task + cfg.alpha * adv
        loss.backward()
        grads.append((loss.detach(), delta, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l1, d1, g1), (l2, d2, g2) = grads
    torch.testing.assert_close(d1, d2, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(l1, l2, atol=1e-12, rtol=1e-10)
    assert any(g.abs().sum() > 0 for g in g1.values())
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-12, rtol=1e-8, msg=name)


def test_embedding_gradient_through_the_adversarial_branch_is_a_choice():
    """embed_grad=False (authors: embed.data.detach() + noise) cuts l_sym's gradient into the embedding layer."""
    norms = {}
    for flows in (True, False):
        model, embeds, clean, forward_fn, batch = _task()
        cfg = AlumConfig(embed_grad=flows, alpha=1.0)
        adv = adversarial_loss(embeds, clean.detach(), forward_fn, cfg, generator=torch.Generator().manual_seed(0))
        adv.loss.backward()
        norms[flows] = model.backbone.embeddings.position_embeddings.weight.grad  # word embeddings: tied to the head
    assert norms[False] is None or not norms[False].any()
    assert norms[True] is not None and norms[True].abs().sum() > 0


def test_same_dropout_replays_one_set_of_masks_per_step():
    """With dropout on, every perturbed forward of a step sees the same masks (δ is the only difference)."""
    from pretrain.alum import DropoutReplay

    _, embeds, _, forward_fn, _ = _task(dropout=0.3)
    torch.manual_seed(3)
    replay = DropoutReplay(embeds.device, enabled=True)
    clean = forward_fn(embeds)  # the clean forward, right after the capture
    assert torch.equal(replay(forward_fn, embeds), clean)
    fresh = DropoutReplay(embeds.device, enabled=False)
    assert not torch.equal(fresh(forward_fn, embeds), fresh(forward_fn, embeds))
    # Training mode with dropout: ε = 0 gives l_sym = 0 only when the clean masks are replayed.
    for same, zero in ((True, True), (False, False)):
        torch.manual_seed(4)
        cfg = AlumConfig(eps=0.0, same_dropout=same)
        rep = DropoutReplay(embeds.device, same)
        res = adversarial_loss(embeds, forward_fn(embeds), forward_fn, cfg, replay=rep)
        assert (res.loss.item() == 0.0) == zero


def test_alpha_zero_and_disabled_run_nothing():
    model, embeds, clean, forward_fn, _ = _task()
    calls = []

    def counting(x):
        calls.append(1)
        return forward_fn(x)

    task = clean.sum()
    for cfg in (None, AlumConfig(alpha=0.0), AlumConfig(enabled=False)):
        reg = regularized_loss(task, embeds, clean, counting, cfg)
        assert reg.loss is task and reg.adv is None
    assert calls == []


def test_ascent_step_formulas():
    delta = torch.tensor([[0.5, -0.25], [0.0, 0.0]])
    grad = torch.tensor([[2.0, 4.0], [0.0, 0.0]])
    cfg = AlumConfig(norm="linf", units="absolute", step_size=0.1, eps=0.55)
    torch.testing.assert_close(ascent_step(delta, grad, cfg), torch.tensor([[0.55, -0.15], [0.0, 0.0]]))
    tok = ascent_step(delta, grad, AlumConfig(norm="token_linf", units="absolute", step_size=0.1))
    torch.testing.assert_close(tok[0], torch.tensor([0.7, 0.15]) / (0.7 + 1e-6))
    l2 = ascent_step(delta, grad, AlumConfig(norm="l2", units="absolute", step_size=0.1, eps=0.1))
    assert l2[0].norm().item() == pytest.approx(0.1, rel=1e-5)
    # relative units: the step and the radius scale with each token's norm
    rel = ascent_step(torch.zeros(2, 2), grad + 1, AlumConfig(step_size=0.5, eps=0.5),
                      scale=torch.tensor([[2.0], [4.0]]))
    torch.testing.assert_close(rel.norm(dim=-1), torch.tensor([1.0, 2.0]))


def test_init_sizes():
    x = torch.randn(2, 50, 64, dtype=torch.float64) * 3
    sphere = init_delta(x, AlumConfig.from_variant("noise", eps=0.2), torch.Generator().manual_seed(0))
    torch.testing.assert_close(sphere.norm(dim=-1).double(), 0.2 * x.norm(dim=-1), rtol=1e-5, atol=1e-6)
    gauss = init_delta(x, AlumConfig(init_std=0.01), torch.Generator().manual_seed(0))
    assert (gauss.norm(dim=-1).double() / x.norm(dim=-1)).mean().item() == pytest.approx(0.01, rel=0.1)


def test_no_parameter_gradient_during_the_ascent_and_diagnostics():
    model, embeds, clean, forward_fn, batch = _task()
    res = adversarial_loss(embeds, clean, forward_fn, AlumConfig(steps=2), token_mask=batch["attention_mask"],
                           measure_gain=True)
    assert all(p.grad is None for p in model.parameters())
    assert 0 < res.delta_ratio.item() <= AlumConfig().eps * (1 + 1e-6)
    assert -1.0 <= res.delta_cos_init.item() <= 1.0 and res.ascent_gain.item() > 0


def test_stats_rows_and_a_single_low_gain_warning():
    stats = AlumStats(AlumConfig.from_variant("authors"))
    _, embeds, clean, forward_fn, batch = _task()
    task = F.cross_entropy(clean, batch["mlm_labels"].reshape(-1)[batch["mlm_labels"].reshape(-1) != -100])
    warnings = []
    for i in range(4):
        reg = regularized_loss(task, embeds, clean, forward_fn, AlumConfig.from_variant("authors"),
                               generator=torch.Generator().manual_seed(i), measure_gain=i % 2 == 0)
        stats.add(reg)
        row = stats.row()
        assert set(row) == set(AlumStats.KEYS)
        assert (row["ascent_gain"] is None) == (i % 2 == 1)
        assert 0 < row["adv_share"] < 1 and row["delta_ratio"] > 0
        warnings.append(stats.warning())
    stats._gains += [1.0, 1.0]
    more = [stats.warning() for _ in range(3)]
    found = [w for w in warnings + more if w]
    assert len(found) == 1 and "not adversarial" in found[0] and "\n" not in found[0]
    assert AlumStats(AlumConfig.from_variant("noise")).warning() is None  # no ascent: nothing to warn about


def test_the_gain_probe_changes_nothing_in_training():
    """Measuring the gain leaves the loss, δ and every RNG (global and the caller's) as they were."""
    _, embeds, clean, forward_fn, batch = _task(dropout=0.1)
    outs = []
    for measure in (False, True):
        torch.manual_seed(9)
        gen = torch.Generator().manual_seed(2)
        res = adversarial_loss(embeds, clean, forward_fn, AlumConfig(), generator=gen, measure_gain=measure)
        outs.append((res.loss.detach(), res.delta, torch.rand(3), torch.rand(3, generator=gen)))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
