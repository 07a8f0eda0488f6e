"""The ascent's loss scaler: float16 underflow without it, overflow handling with it, on CPU."""

from __future__ import annotations

import pytest
import torch
from pretrain_tiny import tiny_batch, tiny_model

from pretrain.alum import AlumConfig, adversarial_loss, init_delta
from pretrain.loss_scale import AscentScaler
from pretrain.model import embed, encode_from

torch.set_num_threads(1)


def test_scaler_policy_backoff_growth_and_state():
    s = AscentScaler(init_scale=1024, backoff=0.5, growth=2.0, growth_interval=2, min_scale=256)
    s.update(overflow=True)
    assert (s.scale, s.overflows) == (512, 1)
    s.update(overflow=False)
    assert s.scale == 512
    s.update(overflow=False)
    assert s.scale == 1024
    for _ in range(5):
        s.update(overflow=True)
    assert s.scale == 256 and s.overflows == 6
    restored = AscentScaler()
    restored.load_state_dict(s.state_dict())
    assert (restored.scale, restored.overflows) == (256, 6)
    s.scale = 8.0
    assert s.scale == 8.0
    assert s.seed(2.0**16) and s.scale == 2.0**16  # DeepSpeed's scale seeds it once ...
    s.update(overflow=True)
    assert not s.seed(2.0**16) and s.scale == 2.0**15  # ... and its own backoff survives a second seed
    again = AscentScaler()
    again.load_state_dict(s.state_dict())
    assert again.seeded and not again.seed(1.0)
    with pytest.raises(ValueError, match="scale"):
        s.scale = float("inf")
    with pytest.raises(ValueError, match="backoff"):
        AscentScaler(backoff=1.5)


def _half_task(model):
    batch = tiny_batch()
    rows = (batch["mlm_labels"].reshape(-1) != -100).nonzero(as_tuple=True)[0]

    def forward_fn(x):
        hidden = encode_from(model.backbone, x, batch["attention_mask"], "embedding_output")
        return model.mlm_head(hidden.reshape(-1, 32)[rows])

    embeds = embed(model.backbone, batch["input_ids"], batch["token_type_ids"], "embedding_output")
    return embeds, forward_fn(embeds), forward_fn


def _ascent_move(model, scaler, autocast=False):
    """δ_final - δ_init after one linf ascent step, for the given model (float16 weights or autocast)."""
    # σ = 3e-3: float16 embeddings of magnitude ~1 have an ulp of ~1e-3, a smaller δ would round away.
    cfg = AlumConfig(norm="linf", units="absolute", eps=1.0, step_size=1e-3, init_std=3e-3, ascent_loss="kl")
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        embeds, clean, forward_fn = _half_task(model)
        result = adversarial_loss(embeds, clean, forward_fn, cfg, scaler=scaler,
                                  generator=torch.Generator().manual_seed(0))
    assert not result.overflow and torch.isfinite(result.loss)
    start = init_delta(embeds, cfg, torch.Generator().manual_seed(0))
    return (result.delta.float() - start.float()).flatten()


@pytest.mark.parametrize("mode", ["float16_weights", "cpu_autocast"])
def test_float16_ascent_gradient_underflows_unless_scaled(mode):
    reference = _ascent_move(tiny_model().eval(), scaler=None)  # float32
    model = tiny_model().eval()
    if mode == "float16_weights":
        model = model.half()
    autocast = mode == "cpu_autocast"
    unscaled = _ascent_move(model, scaler=None, autocast=autocast)
    scaled = _ascent_move(model, scaler=AscentScaler(), autocast=autocast)
    moved = lambda d: (d.abs() > 1e-6).float().mean().item()  # noqa: E731
    assert moved(unscaled) < 0.3  # most δ-gradient entries underflowed to 0: those coordinates never move
    assert moved(scaled) > 0.8
    assert torch.nn.functional.cosine_similarity(scaled, reference, dim=0).item() > 0.9


def _inject_inf_in_ascent(model, which_call=2):
    """Make the gradient flowing back through layer 0 infinite on the `which_call`-th forward of a step."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) == which_call and output.requires_grad:
            output.register_hook(lambda g: g * float("inf"))
        return output

    return model.backbone.encoder.layer[0].register_forward_hook(hook)


@pytest.mark.parametrize("drop", [True, False])
def test_injected_inf_skips_the_ascent_lowers_the_scale_and_keeps_weights_finite(drop):
    model = tiny_model(alum=AlumConfig(norm="linf", units="absolute", drop_nonfinite=drop, eps=1e-3), dropout=0.1)
    model.ascent_scaler = AscentScaler(init_scale=2.0**10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    handle = _inject_inf_in_ascent(model)  # call 1 = clean, 2 = ascent, 3 = adversarial forward
    out = model(**tiny_batch())
    handle.remove()
    assert out.overflow.item() == 1
    assert model.ascent_scaler.scale == 2.0**9 and model.ascent_scaler.overflows == 1
    if drop:
        assert out.adv_loss.item() == 0.0  # authors: the adversarial term is dropped for this batch
    else:
        assert torch.isfinite(out.adv_loss) and out.adv_loss.item() > 0  # loss at δ's init
    out.loss.backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # the next step is clean again
    out = model(**tiny_batch(seed=1))
    assert out.overflow.item() == 0 and out.adv_loss.item() > 0


def test_a_float16_alum_training_step_on_cpu_stays_finite():
    model = tiny_model(alum=AlumConfig(), dropout=0.1).half()
    out = model(**tiny_batch())
    assert out.overflow.item() == 0 and out.adv_loss.item() > 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_backoff_survives_a_deepspeed_step(tmp_path, monkeypatch):
    """One owner of the ascent's scale: an ascent overflow's backoff is not undone by the next engine step.

    DeepSpeed refuses fp16 on CPU, so a ZeRO-0 fp32 engine stands in and reports an fp16 loss scale of 2^16.
    """
    import deepspeed
    from engine_kit import free_port

    from pretrain.engine import sync_ascent_scale

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(key, value)
    model = tiny_model(alum=AlumConfig(), dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config={
        "train_batch_size": 3, "train_micro_batch_size_per_gpu": 3, "zero_optimization": {"stage": 0}})
    monkeypatch.setattr(engine, "fp16_enabled", lambda: True)
    engine.optimizer.cur_scale = 2.0**16  # what pretrain.engine.loss_scale reads
    sync_ascent_scale(engine, model)
    assert model.ascent_scaler.scale == 2.0**16
    handle = _inject_inf_in_ascent(model)
    out = engine(**tiny_batch())
    handle.remove()
    assert out.overflow.item() == 1 and model.ascent_scaler.scale == 2.0**15
    engine.backward(out.loss)
    engine.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    sync_ascent_scale(engine, model)  # the next micro-step
    out = engine(**tiny_batch(seed=1))
    assert model.ascent_scaler.scale == 2.0**15 and out.overflow.item() == 0
