"""ALUM's pure functions against hand computations and a direct re-derivation of each option."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pretrain_tiny import tiny_batch, tiny_model

from pretrain.alum import AlumConfig, adversarial_loss, ascent_step, init_delta, kl, sym_kl
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


def _task(seed: int = 0):
    """A tiny encoder as forward_fn over embedding outputs, and its clean logits at masked rows.

    float64, so that comparisons of δ (whose gradients are ~1e-10) test the algebra, not rounding.
    """
    model = tiny_model(seed=seed).double().eval()
    batch = tiny_batch(seed=seed)
    rows = (batch["mlm_labels"].reshape(-1) != -100).nonzero(as_tuple=True)[0]

    def forward_fn(embeds):
        hidden = encode_from(model.backbone, embeds, batch["attention_mask"], "embedding_output")
        return model.mlm_head(hidden.reshape(-1, 32)[rows])

    embeds = embed(model.backbone, batch["input_ids"], batch["token_type_ids"], "embedding_output")
    return model, embeds, forward_fn(embeds), forward_fn


def _reference(embeds, clean, forward_fn, cfg, seed):
    """Algorithm 1 / the authors' variants written out longhand, independent of pretrain.alum."""
    delta = (torch.randn(embeds.shape, generator=torch.Generator().manual_seed(seed)) * cfg.init_std).double()
    for _ in range(cfg.steps):
        delta = delta.clone().requires_grad_(True)
        adv = forward_fn(embeds.detach() + delta)
        p_clean = F.softmax(clean.detach(), -1)
        if cfg.ascent_loss == "kl":  # authors: F.kl_div(log_softmax(adv), softmax(clean)), batchmean
            obj = F.kl_div(F.log_softmax(adv, -1), p_clean, reduction="batchmean")
        else:
            obj = (F.kl_div(F.log_softmax(adv, -1), p_clean, reduction="batchmean")
                   + F.kl_div(F.log_softmax(clean.detach(), -1), F.softmax(adv, -1), reduction="batchmean"))
        (g,) = torch.autograd.grad(obj, delta)
        delta = delta.detach()
        if cfg.norm == "token_linf":
            new = delta + cfg.step_size * g
            delta = new / (new.abs().max(-1, keepdim=True).values + 1e-6)
        elif cfg.norm == "linf":
            m = g.abs().max(-1, keepdim=True).values
            step = torch.where(m > 0, g / m, 0.0)  # padding tokens get no gradient and stay put
            delta = torch.clamp(delta + cfg.step_size * step, -cfg.eps, cfg.eps)
        else:
            n = g.norm(dim=-1, keepdim=True)
            new = delta + cfg.step_size * torch.where(n > 0, g / n, 0.0)
            n = new.norm(dim=-1, keepdim=True)
            delta = torch.where(n > cfg.eps, new * cfg.eps / n, new)
    adv = forward_fn(embeds + delta)
    lp, lq = F.log_softmax(adv, -1), F.log_softmax(clean, -1)
    loss = (lp.exp() * (lp - lq)).sum(-1).mean() + (lq.exp() * (lq - lp)).sum(-1).mean()
    return loss, delta


@pytest.mark.parametrize("norm", ["token_linf", "linf", "l2"])
@pytest.mark.parametrize("ascent_loss", ["kl", "sym"])
def test_each_norm_and_ascent_loss_match_a_direct_rederivation(norm, ascent_loss):
    _, embeds, clean, forward_fn = _task()
    cfg = AlumConfig(norm=norm, ascent_loss=ascent_loss, eps=1e-3, step_size=1e-3, init_std=1e-4, steps=2)
    ours = adversarial_loss(embeds, clean, forward_fn, cfg, generator=torch.Generator().manual_seed(7))
    ref_loss, ref_delta = _reference(embeds, clean, forward_fn, cfg, seed=7)
    assert not ours.overflow
    torch.testing.assert_close(ours.delta, ref_delta, atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(ours.loss.double(), ref_loss, atol=1e-12, rtol=1e-5)


def test_the_ascent_loss_choice_changes_the_direction():
    _, embeds, clean, forward_fn = _task()
    deltas = {}
    for loss_name in ("kl", "sym"):
        cfg = AlumConfig(norm="linf", ascent_loss=loss_name, eps=1.0, init_std=1e-2, step_size=1e-2)
        deltas[loss_name] = adversarial_loss(embeds, clean, forward_fn, cfg,
                                             generator=torch.Generator().manual_seed(3)).delta
    assert not torch.allclose(deltas["kl"], deltas["sym"])


@pytest.mark.parametrize("norm", ["linf", "l2", "token_linf"])
def test_ascent_increases_sym_kl_and_respects_the_norm(norm):
    _, embeds, clean, forward_fn = _task()
    cfg = AlumConfig(norm=norm, eps=1e-2, step_size=1e-2, init_std=1e-3, steps=3, ascent_loss="sym")
    result = adversarial_loss(embeds, clean, forward_fn, cfg, generator=torch.Generator().manual_seed(0))
    at_init = sym_kl(forward_fn(embeds + init_delta(embeds, cfg.init_std, torch.Generator().manual_seed(0))),
                     clean)
    assert result.loss.item() > 2 * at_init.item()
    if norm == "linf":
        assert result.delta.abs().max().item() <= cfg.eps + 1e-9
    elif norm == "l2":
        assert result.delta.norm(dim=-1).max().item() <= cfg.eps * (1 + 1e-5)
    else:
        assert result.delta.abs().amax(-1).max().item() <= 1.0


def test_a_random_direction_of_the_same_size_does_less_harm():
    _, embeds, clean, forward_fn = _task()
    # init_std > 0: at δ = 0 the divergence is at its minimum and its gradient is exactly zero.
    cfg = AlumConfig(norm="linf", eps=1e-2, step_size=1e-2, init_std=1e-4, ascent_loss="sym")
    adv = adversarial_loss(embeds, clean, forward_fn, cfg)
    rand = torch.randn(embeds.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rand = rand / rand.norm(dim=-1, keepdim=True) * adv.delta.norm(dim=-1, keepdim=True)  # same size per token
    assert adv.loss.item() > sym_kl(forward_fn(embeds + rand), clean).item()


def test_zero_steps_keep_the_init_and_zero_perturbation_gives_zero_loss():
    _, embeds, clean, forward_fn = _task()
    calls = []

    def counting(x):
        calls.append(1)
        return forward_fn(x)

    cfg = AlumConfig(steps=0, init_std=1e-3)
    result = adversarial_loss(embeds, clean, counting, cfg, generator=torch.Generator().manual_seed(5))
    assert len(calls) == 1  # no ascent forward
    torch.testing.assert_close(result.delta, init_delta(embeds, 1e-3, torch.Generator().manual_seed(5)))
    zero = adversarial_loss(embeds, clean, forward_fn, AlumConfig(steps=0, init_std=0.0))
    assert zero.loss.item() == pytest.approx(0.0, abs=1e-9)


def test_ascent_step_formulas():
    delta = torch.tensor([[0.5, -0.25], [0.0, 0.0]])
    grad = torch.tensor([[2.0, 4.0], [0.0, 0.0]])
    cfg = AlumConfig(norm="linf", step_size=0.1, eps=0.55)
    torch.testing.assert_close(ascent_step(delta, grad, cfg), torch.tensor([[0.55, -0.15], [0.0, 0.0]]))
    tok = ascent_step(delta, grad, AlumConfig(norm="token_linf", step_size=0.1))
    torch.testing.assert_close(tok[0], torch.tensor([0.7, 0.15]) / (0.7 + 1e-6))
    l2 = ascent_step(delta, grad, AlumConfig(norm="l2", step_size=0.1, eps=0.1))
    assert l2[0].norm().item() == pytest.approx(0.1, rel=1e-5)


def test_no_parameter_gradient_during_the_ascent_and_clean_logits_reused():
    model, embeds, clean, forward_fn = _task()
    adversarial_loss(embeds, clean, forward_fn, AlumConfig(steps=2))
    assert all(p.grad is None for p in model.parameters())
