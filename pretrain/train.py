"""The pre-training loop: build everything from a ``RunConfig``, train, evaluate, checkpoint, log.

Everything that can be wrong in the user's input (config, DeepSpeed JSON, corpus, tokenizer, output dir)
is checked before anything is written. Then: model → DeepSpeed engine → resume from ``latest`` →
for each optimizer step, ``grad_accum`` micro-batches of ``engine(**batch)`` / ``engine.backward`` /
``engine.step`` → log, eval, save. Per-step randomness comes from RNGs saved in every checkpoint and from
sample ids (masking), so a resumed run repeats the straight run's losses exactly.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import write_json, write_text
from data_tools.errors import UserError
from pretrain import checkpoint, elastic, resume_settings
from pretrain.config import RunConfig, config_dump, deepspeed_dict
from pretrain.dist import DistEnv, discover_dist_env
from pretrain.engine import build_engine, init_distributed, loss_scale, sync_ascent_scale, validate_deepspeed
from pretrain.loader import TrainData, build_data
from pretrain.monitor import Monitor

N_STATS = 13  # loss, mlm, adv, overflow, correct, count, tokens + AlumStats.vector (6)


@dataclass
class TrainResult:
    """What a finished (or exited) run reports back."""

    run_dir: Path
    step: int
    losses: dict[int, float] = field(default_factory=dict)
    """Mean training loss of each logged step (rank 0; empty on other ranks)."""
    last_tag: str | None = None
    eval: dict[str, float] | None = None
    rank: int = 0
    model: torch.nn.Module | None = None
    """The trained module (under ZeRO-3 its parameters stay partitioned)."""


def _check_output_dir(cfg: RunConfig) -> str | None:
    """The checkpoint tag to resume from (or None), refusing a non-empty dir when resume='never'."""
    run_dir = Path(cfg.train.output_dir)
    mode = cfg.train.resume
    if mode == "never":
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(f"train.output_dir: {run_dir} is not empty and train.resume='never'")
        return None
    if mode == "auto":
        return checkpoint.read_latest(run_dir) if run_dir.exists() else None
    checkpoint.step_of(mode)
    if not (checkpoint.checkpoints_dir(run_dir) / mode).is_dir():
        raise UserError(f"train.resume: checkpoint {mode!r} not found in {checkpoint.checkpoints_dir(run_dir)}")
    return mode


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_export_model(cfg: RunConfig, tokenizer) -> torch.nn.Module:
    """The run's model (encoder and heads, weights to be loaded), for export; same state-dict keys as training."""
    return _build_encoder(cfg, tokenizer)


def _build_encoder(cfg: RunConfig, tok) -> torch.nn.Module:
    from pretrain.model import build_model, load_model

    if cfg.model.init_from:
        return load_model(cfg.model.init_from, nsp=cfg.data.nsp)
    m = cfg.model
    return build_model(
        vocab_size=tok.vocab_size, arch=m.arch or cfg.data.style, hidden_size=m.hidden_size,
        num_layers=m.num_layers, num_heads=m.num_heads, intermediate_size=m.intermediate_size,
        max_position_embeddings=m.max_position_embeddings, dropout=m.dropout,
        nsp=cfg.data.nsp, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id, sep_token_id=tok.sep_id,
        seed=cfg.train.seed,
    )


def _build_model(cfg: RunConfig, tok) -> torch.nn.Module:
    """What DeepSpeed wraps: the encoder inside the ALUM objective (plain MLM when ``alum.enabled`` is false)."""
    from pretrain.objective import PretrainObjective

    return PretrainObjective(_build_encoder(cfg, tok), alum=cfg.alum.build())


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(engine, data: TrainData, cfg: RunConfig, dist: DistEnv) -> dict[str, float] | None:
    """Held-out MLM loss, perplexity and masked-token accuracy over every rank's share of the eval samples."""
    batches = data.eval_batches(cfg.train.eval_batches)
    if batches is None:
        return None
    engine.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # loss × count, correct, count
    for batch in batches:
        out = engine(**_to_device(batch, engine.device))
        count = out.masked_count.double().cpu()
        sums += torch.stack([out.mlm_loss.double().cpu() * count, out.masked_correct.double().cpu(), count])
    engine.train()
    if dist.world_size > 1:
        torch.distributed.all_reduce(sums)
    loss = (sums[0] / sums[2].clamp(min=1)).item()
    return {"mlm_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "accuracy": (sums[1] / sums[2].clamp(min=1)).item()}


def _one_step(engine, model, batches, accum_steps: int, ids_log, step: int) -> tuple[torch.Tensor, float]:
    """``accum_steps`` micro-batches of forward/backward/``engine.step`` (DeepSpeed steps the optimizer on the last).

    Returns:
        Sums over the micro-batches (loss, mlm, adv, overflow, correct, count, tokens, then the 6 ALUM
        diagnostics of ``pretrain.alum.AlumStats.vector``), kept on the device so that a GPU is not synchronised
        every micro-batch, and the seconds spent waiting for data.
    """
    stats = torch.zeros(N_STATS, dtype=torch.float64, device=engine.device)
    wait = 0.0
    for _ in range(accum_steps):
        tw = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - tw
        ids = batch.pop("sample_id")
        if ids_log is not None:
            ids_log.add(step, ids)
        tokens = float(batch["attention_mask"].sum())
        sync_ascent_scale(engine, model)
        out = engine(**_to_device(batch, engine.device))
        engine.backward(out.loss)
        engine.step()
        parts = (out.loss, out.mlm_loss, out.adv_loss, out.overflow, out.masked_correct, out.masked_count)
        stats[:6] += torch.stack([t.detach().to(stats.device, torch.float64) for t in parts])
        stats[6] += tokens
        if out.alum_stats is not None:
            stats[7:] += out.alum_stats.to(stats.device)
    return stats, wait


def run(cfg: RunConfig, local_rank: int | None = None, trust_checkpoint: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``.

    Args:
        cfg: The run config.
        local_rank: The launcher's ``--local_rank``, if any.
        trust_checkpoint: Resume with DeepSpeed's unrestricted unpickling (``--trust-checkpoint``).
    Returns:
        A ``TrainResult``. The caller tears the process group down (``pretrain.dist.shutdown_distributed``).
    """
    dist = discover_dist_env(local_rank)
    # Validate every input before the first write: a bad run leaves nothing behind. The DeepSpeed JSON is
    # read and checked here, once; build_engine gets the result.
    ds = deepspeed_dict(cfg, dist.world_size)
    validate_deepspeed(ds, cfg.train.deepspeed_config)
    resume_tag = _check_output_dir(cfg)
    run_dir = Path(cfg.train.output_dir)
    changes = {}
    if resume_tag is not None:
        # A damaged `latest` falls back to the previous complete checkpoint; settings that cannot change
        # mid-run are refused before anything is written.
        resume_tag = checkpoint.usable_tag(run_dir, resume_tag, fall_back=cfg.train.resume == "auto")
        changes = resume_settings.check_resume(cfg, run_dir, resume_tag, checkpoint.step_of(resume_tag))
    data = build_data(cfg, dist)
    init_distributed(dist)
    # A checkpoint written at another world size is converted to DeepSpeed's universal format first.
    resume = elastic.plan(run_dir, resume_tag, dist.world_size, dist.rank) if resume_tag else None

    _seed_all(cfg.train.seed)
    model = _build_model(cfg, data.tokenizer)
    engine, ds = build_engine(cfg, model, ds, extra=elastic.deepspeed_overrides(resume))
    # Different ranks must draw different dropout masks / ALUM noise; the model init above was shared.
    _seed_all(cfg.train.seed + 1000 * dist.rank + 1)

    step, consumed = 0, 0
    checkpoint.remove_unfinished(run_dir, dist.rank)
    if resume_tag is not None:
        client = (elastic.load(engine, resume, dist.rank, cfg.train.seed) if resume
                  else checkpoint.load(engine, run_dir, resume_tag, dist.rank, trust=trust_checkpoint))
        step, consumed = client["step"], client["consumed_samples"]
        model.ascent_scaler.load_state_dict(client["ascent_scaler"])
        model.alum_steps = client.get("alum_steps", 0)  # keeps the gain probes on the straight run's steps
        resume_settings.apply_lr_schedule(engine, cfg)  # a changed LR schedule takes effect from this step
        if dist.rank == 0:
            truncate_jsonl(run_dir / "metrics.jsonl", step)
            resume_settings.record_changes(run_dir, step, changes)
            if changes:
                print(f"resuming {resume_tag} with changed settings: "
                      + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
                      + f" (recorded in {run_dir / resume_settings.HISTORY})", flush=True)
    if dist.rank == 0:  # the record of how the run started; a resume never rewrites it
        resume_settings.write_initial_config(run_dir, cfg)
        if not (run_dir / "deepspeed_config.json").exists():
            write_json(run_dir / "deepspeed_config.json", ds)

    total = cfg.total_steps()
    accum_steps = engine.gradient_accumulation_steps()
    monitor = Monitor(cfg, run_dir, dist, model, start_step=step, total_steps=total)
    result = TrainResult(run_dir=run_dir, step=step, rank=dist.rank, model=model)
    ids_log = _SampleIdLog(run_dir, dist.rank, step) if cfg.train.log_sample_ids else None
    batches = data.train_batches(consumed)
    exit_early = False
    if resume_tag is not None and "rng" in client:
        # Last thing before the first step: anything above may draw random numbers.
        checkpoint.set_rng_state(client["rng"])
    while step < total and not exit_early:
        t0 = time.perf_counter()
        stats, wait = _one_step(engine, model, batches, accum_steps, ids_log, step + 1)
        step += 1
        consumed += cfg.train.global_batch
        logged = monitor.step(step, stats, accum_steps, time.perf_counter() - t0, wait, engine.get_lr()[0],
                              loss_scale(engine), engine.get_global_grad_norm())
        if logged is not None:
            result.losses[step] = logged
        if cfg.train.eval_interval and step % cfg.train.eval_interval == 0:
            result.eval = evaluate(engine, data, cfg, dist)
            monitor.eval(step, result.eval)
        exit_early = bool(cfg.train.exit_interval and step % cfg.train.exit_interval == 0 and step < total)
        due = cfg.train.save_interval and step % cfg.train.save_interval == 0
        if due or step == total or exit_early:
            state = {"step": step, "consumed_samples": consumed, "config": config_dump(cfg),
                      "world_size": dist.world_size, "ascent_scaler": model.ascent_scaler.state_dict(),
                      "alum_steps": model.alum_steps}
            result.last_tag = checkpoint.save(engine, run_dir, step, state, dist.rank, cfg.train.keep_last)
    if step >= total and (not cfg.train.eval_interval or step % cfg.train.eval_interval):
        result.eval = evaluate(engine, data, cfg, dist)
        monitor.eval(step, result.eval)
    result.step = step
    monitor.close(step, exited=exit_early)
    data.close()
    if hasattr(engine, "destroy"):
        engine.destroy()
    return result


class _SampleIdLog:
    """Appends ``{"step": s, "ids": [...]}`` lines per rank; lines past the resumed step are dropped."""

    def __init__(self, run_dir: Path, rank: int, start_step: int):
        self.path = run_dir / "sample_ids" / f"rank{rank}.jsonl"
        truncate_jsonl(self.path, start_step)

    def add(self, step: int, ids: torch.Tensor) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, "ids": ids.tolist()}) + "\n")


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the lines of a per-step JSONL log up to ``step``: a resumed run drops what a run that died before
    its next checkpoint had logged (``metrics.jsonl``, ``sample_ids/rank<R>.jsonl``). Creates an empty log."""
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows if r.get("step", 0) <= step))
