"""The fine-tuning loop shared by ``classify`` and ``qa``: AdamW with linear warmup/decay, optional ALUM,
optional DeepSpeed, progress bar, TensorBoard, evaluation, and best/final checkpoints as HF directories.

Plain PyTorch by default; ``--deepspeed CFG`` hands the model, optimizer and schedule to
``deepspeed.initialize`` (ZeRO 0-3) and the same launchers as pre-training work (``--local_rank`` is
accepted; the rank's share of each epoch is every ``world``-th batch).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from data_tools.atomic import write_json
from data_tools.errors import UserError
from finetune.modeling import train_loss


def save_hf_dir(model, tokenizer, out_dir: Path) -> None:
    """``save_pretrained`` model and tokenizer into ``out_dir`` atomically (temp dir, then rename)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # Biases and LayerNorm weights are not decayed (BERT's recipe, as in run_glue.py).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_distributed() -> None:
    """Join the launcher's process group (deepspeed/torchrun/mpirun), or a group of one without a launcher."""
    import deepspeed

    if torch.distributed.is_initialized():
        return
    if "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_PORT", "29511")
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def _deepspeed_init(model, optimizer, scheduler, config_path: Path, batch_size: int, max_grad_norm: float):
    import json

    import deepspeed

    if not config_path.is_file():
        raise UserError(f"{config_path}: no such DeepSpeed config file")
    try:
        ds_cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(ds_cfg, dict):
        raise UserError(f"{config_path}: expected a JSON object (DeepSpeed config)")
    for key in ("optimizer", "scheduler"):
        if key in ds_cfg:
            raise UserError(f"{config_path}: '{key}' section not allowed; --lr/--warmup-ratio/--weight-decay "
                            "own the optimizer and schedule")
    world = torch.distributed.get_world_size()
    # The loop owns batching (one micro-batch per rank per step) and clipping: fill or check those keys.
    want = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": 1,
            "train_batch_size": batch_size * world, "gradient_clipping": max_grad_norm}
    for key, value in want.items():
        if ds_cfg.get(key, "auto") == "auto":
            ds_cfg[key] = value
        elif ds_cfg[key] != value:
            raise UserError(f"{config_path}: {key} is {ds_cfg[key]!r}, expected \"auto\" or {value!r} "
                            "(from --batch-size/--max-grad-norm)")
    engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                           lr_scheduler=scheduler, config=ds_cfg)
    return engine, optimizer, scheduler


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
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    out_dir = Path(out_dir)
    alum = opts.alum.build()
    if opts.deepspeed is not None:
        _init_distributed()
    rank, world = _dist_info()
    # One step = one micro-batch on every rank; an epoch's last incomplete round of batches is dropped.
    per_epoch = steps_per_epoch // world
    if per_epoch == 0:
        raise UserError(f"{steps_per_epoch} batches per epoch for {world} ranks; expected at least one per "
                        "rank (lower --batch-size)")
    total_steps = max(1, math.ceil(per_epoch * opts.epochs))
    optimizer = _optimizer(model, opts.lr, opts.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(opts.warmup_ratio * total_steps), total_steps)
    engine = None
    if opts.deepspeed is not None:
        engine, optimizer, scheduler = _deepspeed_init(model, optimizer, scheduler, Path(opts.deepspeed),
                                                     opts.batch_size, opts.max_grad_norm)
    module = engine.module if engine is not None else model
    writer = SummaryWriter(str(out_dir / "tensorboard")) if rank == 0 else None
    gen = torch.Generator().manual_seed(opts.seed + 7919 * rank)
    eval_every = max(1, per_epoch // opts.evals_per_epoch)
    history: list[dict] = []
    best: dict | None = None
    step = samples = 0
    # Wall clock of the training loop (batching, forward/backward, optimizer, logging) without the time
    # spent evaluating and saving checkpoints: what a samples/s figure should mean.
    loop_start = time.perf_counter()
    paused = 0.0
    bar = tqdm(total=total_steps, desc="finetune", disable=rank != 0, dynamic_ncols=True)
    epoch = 0
    while step < total_steps:
        for i, batch in enumerate(train_batches(epoch)):
            if step >= total_steps or i >= per_epoch * world:
                break
            if i % world != rank:
                continue
            module.train()
            out = train_loss(module, batch, alum, generator=gen)
            if engine is not None:
                engine.backward(out["loss"])
                engine.step()
            else:
                out["loss"].backward()
                if opts.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), opts.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            train_time = time.perf_counter() - loop_start - paused
            step += 1
            samples += len(batch["input_ids"]) * world
            loss = float(out["loss"].detach())
            if not math.isfinite(loss):
                raise UserError(f"step {step}: loss is {loss}; lower --lr or check the data")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if writer is not None and (step % opts.log_every == 0 or step == 1):
                writer.add_scalar("train/loss", loss, step)
                writer.add_scalar("train/task_loss", float(out["task_loss"]), step)
                if out["adv_loss"] is not None:
                    writer.add_scalar("train/adv_loss", float(out["adv_loss"]), step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                writer.add_scalar("train/samples_per_second", samples / max(train_time, 1e-9), step)
            if step % eval_every == 0 or step == total_steps:
                t_eval = time.perf_counter()
                scores = _evaluate(module, evaluate)
                scores.update(step=step, epoch=round(step / per_epoch, 3))
                history.append(scores)
                if metric not in scores:
                    raise UserError(f"--metric: {metric!r} is not computed for this task; expected one of "
                                    f"{', '.join(k for k in scores if k not in ('step', 'epoch'))}")
                if writer is not None:
                    for k, v in scores.items():
                        if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                            writer.add_scalar(f"dev/{k}", v, step)
                # Every rank scores the whole dev set, so all take the same decision (ZeRO-3 gathers need all).
                if best is None or scores[metric] > best[metric]:
                    best = dict(scores)
                    _save(engine, module, tokenizer, out_dir / "best", rank)
                paused += time.perf_counter() - t_eval
                if rank == 0:
                    bar.write(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()
                                                           if isinstance(v, float)))
        epoch += 1
    bar.close()
    train_time = time.perf_counter() - loop_start - paused
    result = {"metric": metric, "best": best, "final": history[-1] if history else None, "history": history,
              "train_steps": step, "train_samples": samples,
              "train_samples_per_second": samples / max(train_time, 1e-9),
              "train_seconds": train_time, "alum": opts.alum.model_dump(),
              **(extra_metrics or {})}
    _save(engine, module, tokenizer, out_dir / "final", rank)
    if rank == 0:
        write_json(out_dir / "metrics.json", result)
    if writer is not None:
        writer.close()
    if engine is not None and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def _save(engine, module, tokenizer, path: Path, rank: int) -> None:
    """Rank 0 writes the HF directory; under ZeRO-3 every rank first gathers the partitioned weights."""
    if engine is not None and engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if rank == 0:
                save_hf_dir(module, tokenizer, path)
        return
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
