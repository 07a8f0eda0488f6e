"""The pre-training loop: ``run`` builds a :class:`Trainer` from a ``RunConfig``, steps it, evaluates and
checkpoints as due, and closes it.

Everything that can be wrong in the user's input (config, DeepSpeed JSON, corpus, tokenizer, output dir)
is checked before anything is written (``Trainer.build``). Then: model → DeepSpeed engine → resume from
``latest`` → for each optimizer step, ``grad_accum`` micro-batches of ``engine(**batch)`` (the objective,
``pretrain.objective``) / ``engine.backward`` / ``engine.step``, their sums in a ``StepStats`` for the monitor.
Per-step randomness comes from RNGs saved in every checkpoint and from sample ids (masking), so a resumed run
repeats the straight run's losses exactly.
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
from pretrain.step_stats import StepStats


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


def _resume_from(cfg: RunConfig) -> tuple[str | None, dict]:
    """The checkpoint tag to resume from (or None) and the settings changed since it was written.

    Refuses a non-empty dir when resume='never'; a damaged ``latest`` falls back to the previous complete
    checkpoint; settings that cannot change mid-run are refused (all before anything is written).
    """
    run_dir = Path(cfg.train.output_dir)
    mode = cfg.train.resume
    if mode == "never":
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(f"train.output_dir: {run_dir} is not empty and train.resume='never'")
        return None, {}
    if mode == "auto":
        tag = checkpoint.read_latest(run_dir) if run_dir.exists() else None
    else:
        checkpoint.step_of(mode)
        if not (checkpoint.checkpoints_dir(run_dir) / mode).is_dir():
            raise UserError(f"train.resume: checkpoint {mode!r} not found in {checkpoint.checkpoints_dir(run_dir)}")
        tag = mode
    if tag is None:
        return None, {}
    tag = checkpoint.usable_tag(run_dir, tag, fall_back=mode == "auto")
    return tag, resume_settings.check_resume(cfg, run_dir, tag, checkpoint.step_of(tag))


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
def held_out_metrics(engine, data: TrainData, cfg: RunConfig, dist: DistEnv) -> dict[str, float] | None:
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


def run(cfg: RunConfig, local_rank: int | None = None, trust_checkpoint: bool = False) -> TrainResult:
    """Train (or resume) the run described by ``cfg``.

    Args:
        cfg: The run config.
        local_rank: The launcher's ``--local_rank``, if any.
        trust_checkpoint: Resume with DeepSpeed's unrestricted unpickling (``--trust-checkpoint``).
    Returns:
        A ``TrainResult``. The caller tears the process group down (``pretrain.dist.shutdown_distributed``).
    """
    trainer = Trainer.build(cfg, local_rank, trust_checkpoint)
    while not trainer.finished:
        trainer.step()
        if trainer.eval_due:
            trainer.evaluate()
        if trainer.save_due:
            trainer.save()
    if trainer.completed and not trainer.eval_due:  # the finished model's held-out metrics, unless just taken
        trainer.evaluate()
    return trainer.close()


class Trainer:
    """One rank's training run: ``build`` it, then ``step`` / ``evaluate`` / ``save`` as due, then ``close``.

    Attributes:
        step_count: Optimizer steps done (from the checkpoint on resume).
        consumed: Samples consumed over all ranks (where the data sampler resumes).
        exited: True once a step hit ``train.exit_interval`` before the last step.
    """

    def __init__(self, cfg: RunConfig, dist: DistEnv, data: TrainData, model: torch.nn.Module, engine):
        self.cfg, self.dist, self.data, self.model, self.engine = cfg, dist, data, model, engine
        self.run_dir = Path(cfg.train.output_dir)
        self.total = cfg.total_steps()
        self.step_count = self.consumed = 0
        self.exited = False
        self.result = TrainResult(run_dir=self.run_dir, step=0, rank=dist.rank, model=model)

    @classmethod
    def build(cls, cfg: RunConfig, local_rank: int | None = None, trust_checkpoint: bool = False) -> Trainer:
        """Check every input, then data → model → DeepSpeed engine → resume state → logs, ready to ``step``."""
        dist = discover_dist_env(local_rank)
        # Validate every input before the first write: a bad run leaves nothing behind. The DeepSpeed JSON is
        # read and checked here, once; build_engine gets the result.
        ds = deepspeed_dict(cfg, dist.world_size)
        validate_deepspeed(ds, cfg.train.deepspeed_config)
        tag, changes = _resume_from(cfg)
        data = build_data(cfg, dist)
        init_distributed(dist)
        # A checkpoint written at another world size is converted to DeepSpeed's universal format first.
        universal = elastic.plan(Path(cfg.train.output_dir), tag, dist.world_size, dist.rank) if tag else None
        _seed_all(cfg.train.seed)
        model = _build_model(cfg, data.tokenizer)
        engine, ds = build_engine(cfg, model, ds, extra=elastic.deepspeed_overrides(universal))
        # Different ranks must draw different dropout masks / ALUM noise; the model init above was shared.
        _seed_all(cfg.train.seed + 1000 * dist.rank + 1)
        trainer = cls(cfg, dist, data, model, engine)
        checkpoint.remove_unfinished(trainer.run_dir, dist.rank)
        client = trainer._restore(tag, changes, universal, trust_checkpoint) if tag is not None else {}
        trainer._record_start(ds)
        trainer._open_logs()
        if "rng" in client:  # last thing before the first step: anything above may draw random numbers
            checkpoint.set_rng_state(client["rng"])
        return trainer

    def _restore(self, tag: str, changes: dict, universal, trust: bool) -> dict:
        """Load checkpoint ``tag`` into the engine and this trainer; returns DeepSpeed's client state."""
        dist, model = self.dist, self.model
        client = (elastic.load(self.engine, universal, dist.rank, self.cfg.train.seed) if universal
                  else checkpoint.load(self.engine, self.run_dir, tag, dist.rank, trust=trust))
        self.step_count, self.consumed = client["step"], client["consumed_samples"]
        model.ascent_scaler.load_state_dict(client["ascent_scaler"])
        model.alum_steps = client.get("alum_steps", 0)  # keeps the gain probes on the straight run's steps
        resume_settings.apply_lr_schedule(self.engine, self.cfg)  # a changed LR schedule takes effect from here
        if dist.rank == 0:
            truncate_jsonl(self.run_dir / "metrics.jsonl", self.step_count)
            resume_settings.record_changes(self.run_dir, self.step_count, changes)
            if changes:
                print(f"resuming {tag} with changed settings: "
                      + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
                      + f" (recorded in {self.run_dir / resume_settings.HISTORY})", flush=True)
        return client

    def _record_start(self, ds: dict) -> None:
        """Rank 0: the record of how the run started (config, DeepSpeed JSON); a resume never rewrites it."""
        if self.dist.rank != 0:
            return
        resume_settings.write_initial_config(self.run_dir, self.cfg)
        if not (self.run_dir / "deepspeed_config.json").exists():
            write_json(self.run_dir / "deepspeed_config.json", ds)

    def _open_logs(self) -> None:
        """The monitor, the sample-id log and the batch stream, from the (resumed) step on."""
        cfg, step = self.cfg, self.step_count
        self.result.step = step
        self.monitor = Monitor(cfg, self.run_dir, self.dist, self.model, start_step=step, total_steps=self.total)
        self.ids_log = _SampleIdLog(self.run_dir, self.dist.rank, step) if cfg.train.log_sample_ids else None
        self.batches = self.data.train_batches(self.consumed)

    @property
    def completed(self) -> bool:
        """Every step of the run is done."""
        return self.step_count >= self.total

    @property
    def finished(self) -> bool:
        """No step is left to run in this process (the run is complete, or exited at ``exit_interval``)."""
        return self.completed or self.exited

    @property
    def eval_due(self) -> bool:
        interval = self.cfg.train.eval_interval
        return bool(interval and self.step_count % interval == 0)

    @property
    def save_due(self) -> bool:
        interval = self.cfg.train.save_interval
        return bool(interval and self.step_count % interval == 0) or self.completed or self.exited

    def step(self) -> None:
        """One optimizer step, then its statistics to the monitor."""
        engine, cfg = self.engine, self.cfg
        t0 = time.perf_counter()
        stats, wait = self._micro_batches(self.step_count + 1)
        self.step_count += 1
        self.consumed += cfg.train.global_batch
        logged = self.monitor.step(self.step_count, stats, time.perf_counter() - t0, wait, engine.get_lr()[0],
                                   loss_scale(engine), engine.get_global_grad_norm())
        if logged is not None:
            self.result.losses[self.step_count] = logged
        exit_interval = cfg.train.exit_interval
        self.exited = bool(exit_interval and self.step_count % exit_interval == 0 and not self.completed)

    def _micro_batches(self, step: int) -> tuple[StepStats, float]:
        """``grad_accum`` micro-batches of forward/backward/``engine.step`` (DeepSpeed steps the optimizer on
        the last); returns their summed statistics and the seconds spent waiting for data."""
        engine = self.engine
        stats = StepStats.zeros(engine.device)
        wait = 0.0
        for _ in range(engine.gradient_accumulation_steps()):
            tw = time.perf_counter()
            batch = next(self.batches)
            wait += time.perf_counter() - tw
            ids = batch.pop("sample_id")
            if self.ids_log is not None:
                self.ids_log.add(step, ids)
            tokens = float(batch["attention_mask"].sum())
            sync_ascent_scale(engine, self.model)
            # The objective, MLM (+NSP) + α·l_sym(f(x+δ*), f(x)): pretrain.objective.PretrainObjective.forward.
            out = engine(**_to_device(batch, engine.device))
            engine.backward(out.loss)
            engine.step()
            stats.add(out, tokens)
        return stats, wait

    def evaluate(self) -> dict[str, float] | None:
        """Held-out metrics of the current weights (:func:`held_out_metrics`), logged by the monitor."""
        self.result.eval = held_out_metrics(self.engine, self.data, self.cfg, self.dist)
        self.monitor.eval(self.step_count, self.result.eval)
        return self.result.eval

    def save(self) -> str:
        """A checkpoint of this step: engine state plus what resuming needs to repeat the straight run."""
        model = self.model
        state = {"step": self.step_count, "consumed_samples": self.consumed, "config": config_dump(self.cfg),
                 "world_size": self.dist.world_size, "ascent_scaler": model.ascent_scaler.state_dict(),
                 "alum_steps": model.alum_steps}
        self.result.last_tag = checkpoint.save(self.engine, self.run_dir, self.step_count, state, self.dist.rank,
                                               self.cfg.train.keep_last)
        return self.result.last_tag

    def close(self) -> TrainResult:
        """Flush the logs, stop the data workers, release the engine; what the run reports back."""
        self.result.step = self.step_count
        self.monitor.close(self.step_count, exited=self.exited)
        self.data.close()
        if hasattr(self.engine, "destroy"):
            self.engine.destroy()
        return self.result


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
