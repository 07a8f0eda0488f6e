"""The fine-tuning loop shared by ``classify`` and ``qa``: AdamW with linear warmup/decay, optional ALUM,
optional DeepSpeed, progress bar, TensorBoard, evaluation, and best/final checkpoints as HF directories.

Plain PyTorch by default; ``--deepspeed CFG`` hands the model, optimizer and schedule to
``deepspeed.initialize`` (ZeRO 0-3) through ``pretrain.engine.initialize_finetune`` (this package never imports
DeepSpeed itself; the JSON is checked as pre-training checks it) and the same launchers as pre-training work (``--local_rank`` is
accepted; the rank's share of each epoch is every ``world``-th batch).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from data_tools.atomic import atomic_dir, write_json
from data_tools.errors import UserError
from finetune.modeling import train_loss
from pretrain.alum_stats import AlumStats
from pretrain.engine import param_groups
from pretrain.loss_scale import AscentScaler


def save_hf_dir(model, tokenizer, out_dir: Path) -> None:
    """``save_pretrained`` model and tokenizer into ``out_dir`` atomically (temp dir, then rename)."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))


def _optimizer(model, lr: float, weight_decay: float, fused: bool = True) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)  # biases and LayerNorm weights are not decayed
    # The fused kernel (CPU and CUDA) is HF Trainer's default too ("adamw_torch_fused"); DeepSpeed's ZeRO
    # wrappers get the plain one.
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_distributed() -> None:
    """Join the launcher's process group (deepspeed/torchrun/mpirun), or a group of one without a launcher."""
    from pretrain.dist import discover_dist_env
    from pretrain.engine import init_distributed

    init_distributed(discover_dist_env())


def fit(model, tokenizer, opts, train_batches: Callable[[int], Iterator[dict]], steps_per_epoch: int,
        evaluate: Callable[[torch.nn.Module], dict], metric: str, out_dir: Path,
        extra_metrics: dict | None = None) -> dict:
    """Fine-tune ``model`` and keep its best and final checkpoints.

    Args:
        model: a HF task model.
        tokenizer: saved next to every checkpoint.
        opts: a ``TrainOptions`` (epochs, lr, batch sizes, alum, deepspeed, ...).
        train_batches: ``epoch -> iterator of batches`` (dicts of tensors), deterministic per epoch.
        steps_per_epoch: batches per epoch (all ranks together).
        evaluate: ``model -> scores`` on the dev set (model in eval mode while it runs).
        metric: the score in ``evaluate``'s dict that picks the best checkpoint (higher is better).
        out_dir: the run directory: ``best/``, ``final/``, ``tensorboard/``, ``metrics.json``.
        extra_metrics: written into ``metrics.json`` as they are (e.g. the majority baseline).
    Returns:
        The contents of ``metrics.json``.
    """
    from tqdm.auto import tqdm

    loop = FinetuneLoop(model, tokenizer, opts, steps_per_epoch, evaluate, metric, Path(out_dir))
    alum = opts.alum.build()
    loop.use_alum(alum)
    gen = torch.Generator().manual_seed(opts.seed + 7919 * loop.rank)
    bar = tqdm(total=loop.total_steps, desc="finetune", disable=loop.rank != 0, dynamic_ncols=True)
    epoch = 0
    while loop.step < loop.total_steps:
        for i, batch in enumerate(train_batches(epoch)):
            if loop.step >= loop.total_steps or i >= loop.per_epoch * loop.world:
                break
            if i % loop.world != loop.rank:  # each rank takes every world-th batch
                continue
            out = loop.train_step(batch, alum, gen)
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss']:.4f}")
            if loop.step % loop.eval_every == 0 or loop.step == loop.total_steps:
                scores = loop.evaluate_and_keep_best()
                if loop.rank == 0:
                    bar.write(f"step {loop.step}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                                                if isinstance(v, float)))
        epoch += 1
    bar.close()
    return loop.finish(extra_metrics)


class FinetuneLoop:
    """State of one fine-tuning run: optimizer, schedule, optional DeepSpeed engine, logging, best score."""

    def __init__(self, model, tokenizer, opts, steps_per_epoch: int, evaluate: Callable, metric: str,
                 out_dir: Path):
        from torch.utils.tensorboard import SummaryWriter
        from transformers import get_linear_schedule_with_warmup

        if opts.deepspeed is not None:
            _init_distributed()
        self.rank, self.world = _dist_info()
        # One step = one micro-batch on every rank; an epoch's last incomplete round of batches is dropped.
        self.per_epoch = steps_per_epoch // self.world
        if self.per_epoch == 0:
            raise UserError(f"{steps_per_epoch} batches per epoch for {self.world} ranks; expected at least "
                            "one per rank (lower --batch-size)")
        self.total_steps = max(1, math.ceil(self.per_epoch * opts.epochs))
        self.eval_every = max(1, self.per_epoch // opts.evals_per_epoch)
        self.optimizer = _optimizer(model, opts.lr, opts.weight_decay, fused=opts.deepspeed is None)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(opts.warmup_ratio * self.total_steps),
                                                         self.total_steps)
        self.engine = None
        if opts.deepspeed is not None:
            from pretrain.engine import initialize_finetune

            self.engine, self.optimizer, self.scheduler = initialize_finetune(
                model, self.optimizer, self.scheduler, Path(opts.deepspeed), opts.batch_size, opts.clip_grad)
        self.module = self.engine.module if self.engine is not None else model
        self.tokenizer, self.opts, self.evaluate, self.metric, self.out_dir = tokenizer, opts, evaluate, metric, out_dir
        self.writer = SummaryWriter(str(out_dir / "tensorboard")) if self.rank == 0 else None
        self.history: list[dict] = []
        self.best: dict | None = None
        self.step = self.samples = 0
        self.alum = None
        self.alum_stats = AlumStats(None)
        # One owner of the ascent's loss scale, as in pre-training: seeded once from DeepSpeed's fp16 scale.
        self.ascent_scaler = AscentScaler()
        self._interval = {"loss": 0.0, "task_loss": 0.0, "adv_loss": 0.0, "n": 0}
        if self.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "metrics.jsonl").write_text("")  # per-interval training rows of this run
        # Wall clock of the training loop (batching, forward/backward, optimizer, logging) without the time
        # spent evaluating and saving checkpoints: what a samples/s figure should mean.
        self.start = time.perf_counter()
        self.paused = 0.0

    def train_seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def use_alum(self, alum) -> None:
        """Set the ALUM options (None: plain) for the diagnostics and the gain schedule."""
        self.alum = alum
        self.alum_stats = AlumStats(alum)

    def train_step(self, batch: dict, alum, gen: torch.Generator) -> dict:
        self.module.train()
        if self.engine is not None:
            from pretrain.engine import sync_ascent_scale

            sync_ascent_scale(self.engine, self)
        measure = alum is not None and bool(alum.gain_interval) and self.step % alum.gain_interval == 0
        out = train_loss(self.module, batch, alum, generator=gen, scaler=self.ascent_scaler, measure_gain=measure)
        if out["regularized"] is not None:
            self.alum_stats.add(out["regularized"])
        if self.engine is not None:
            self.engine.backward(out["loss"])
            self.engine.step()
        else:
            out["loss"].backward()
            if self.opts.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.opts.clip_grad)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.samples += len(batch["input_ids"]) * self.world
        loss = float(out["loss"].detach())
        if not math.isfinite(loss):
            raise UserError(f"step {self.step}: loss is {loss}; lower --lr or check the data")
        acc = self._interval
        acc["loss"] += loss
        acc["task_loss"] += float(out["task_loss"])
        acc["adv_loss"] += float(out["adv_loss"]) if out["adv_loss"] is not None else 0.0
        acc["n"] += 1
        if self.step % self.opts.log_interval == 0 or self.step == 1:
            self._log_interval()
        return {**out, "loss": loss, "regularized": None}  # floats: the graph is freed before the next step

    def _log_interval(self) -> None:
        """One metrics.jsonl row and TensorBoard scalars (rank 0): interval means, ALUM diagnostics."""
        acc, n = self._interval, max(self._interval["n"], 1)
        row = {"step": self.step, "loss": acc["loss"] / n, "task_loss": acc["task_loss"] / n,
               "adv_loss": acc["adv_loss"] / n, "lr": self.scheduler.get_last_lr()[0],
               "samples_per_second": self.samples / max(self.train_seconds(), 1e-9)}
        if self.alum is not None and self.alum.active:
            row.update(self.alum_stats.row())
        self._interval = {"loss": 0.0, "task_loss": 0.0, "adv_loss": 0.0, "n": 0}
        if self.writer is None:
            return
        with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key == "step" or value is None:
                continue
            self.writer.add_scalar(f"{'alum' if key in AlumStats.KEYS else 'train'}/{key}", value, self.step)
        warning = self.alum_stats.warning()
        if warning:
            print(warning, file=sys.stderr, flush=True)

    def evaluate_and_keep_best(self) -> dict:
        t0 = time.perf_counter()
        scores = _evaluate(self.module, self.evaluate)
        scores.update(step=self.step, epoch=round(self.step / self.per_epoch, 3))
        self.history.append(scores)
        if self.metric not in scores:
            raise UserError(f"--metric: {self.metric!r} is not computed for this task; expected one of "
                            f"{', '.join(k for k in scores if k not in ('step', 'epoch'))}")
        if self.writer is not None:
            for k, v in scores.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.writer.add_scalar(f"dev/{k}", v, self.step)
        # Every rank scores the whole dev set, so all take the same decision (ZeRO-3 gathers need all).
        if self.best is None or scores[self.metric] > self.best[self.metric]:
            self.best = dict(scores)
            _save(self.engine, self.module, self.tokenizer, self.out_dir / "best", self.rank)
        self.paused += time.perf_counter() - t0
        return scores

    def finish(self, extra_metrics: dict | None) -> dict:
        seconds = self.train_seconds()
        result = {"metric": self.metric, "best": self.best, "final": self.history[-1] if self.history else None,
                  "history": self.history, "train_steps": self.step, "train_samples": self.samples,
                  "train_samples_per_second": self.samples / max(seconds, 1e-9), "train_seconds": seconds,
                  "alum": self.opts.alum.model_dump(), **(extra_metrics or {})}
        _save(self.engine, self.module, self.tokenizer, self.out_dir / "final", self.rank)
        if self.rank == 0:
            write_json(self.out_dir / "metrics.json", result)
        if self.writer is not None:
            self.writer.close()
        if self.engine is not None:
            from pretrain.dist import shutdown_distributed

            shutdown_distributed()
        return result


def _save(engine, module, tokenizer, path: Path, rank: int) -> None:
    """Rank 0 writes the HF directory; under ZeRO-3 every rank first gathers the partitioned weights."""
    from pretrain.engine import gathered_parameters

    with gathered_parameters(engine, module):
        if rank == 0:
            save_hf_dir(module, tokenizer, path)


def _evaluate(model, evaluate: Callable) -> dict:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return dict(evaluate(model))
    finally:
        model.train(was_training)
