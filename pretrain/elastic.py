"""Resume a run at another data-parallel world size, through DeepSpeed's universal checkpoint.

A ZeRO-1/2/3 checkpoint is cut into one optimizer shard per data-parallel rank, and DeepSpeed refuses to
load it at another world size ("Automatic adjustment of ZeRO's optimizer state partitioning with a new
world size is not currently supported", ``DeepSpeedEngine._load_zero_checkpoint``). Its answer is the
*universal checkpoint*: ``deepspeed.checkpoint.ds_to_universal`` writes every parameter's fp32 weights and
Adam moments whole, one folder per parameter, and an engine built with ``"checkpoint": {"load_universal":
true}`` cuts them again for its own world size. (DeepSpeed 0.19.8: ``deepspeed/checkpoint/ds_to_universal.py``,
``DeepSpeedEngine.load_checkpoint`` / ``_load_zero_checkpoint`` in ``deepspeed/runtime/engine.py``,
``load_hp_checkpoint_state_from_checkpoint_dir`` in ``runtime/base_optimizer.py`` for ZeRO-1/2 and
``load_hp_checkpoint_state_from_checkpoint_dir_stage3`` in ``runtime/zero/stage3.py``.)

What happens on resume (``plan`` → ``train.Trainer.build`` builds the engine with ``deepspeed_overrides`` → ``load``):

- The saved world size is the number of ``trainer_state_rank<R>.*`` files of the tag (one per rank), and
  the ZeRO optimizer shards must agree with it. Same world size, or ZeRO-0 (its ``mp_rank_00`` file holds
  the whole model and the whole torch optimizer state, which load at any world size): the checkpoint loads
  as it is, bit-exactly (``checkpoint.load``).
- Otherwise rank 0 converts the tag once into ``checkpoints/step_<N>/universal/`` (written under a
  temporary name and renamed when complete, so a killed conversion is redone; the original files are never
  touched) with ``python -m deepspeed.checkpoint.ds_to_universal --inject_missing_state``, and every rank
  loads it. ``--inject_missing_state`` adds the ``universal_checkpoint_info`` marker
  (``{"universal_checkpoint_version": 0.4}``, ``deepspeed.checkpoint.constants``) that the converter asserts
  for ZeRO-1/2; our model has no tensor/pipeline parallelism, so the marker is all it needs, and
  checkpoints written before this module existed convert too. The same conversion by hand::

      python -m deepspeed.checkpoint.ds_to_universal --inject_missing_state \\
          --input_folder RUN/checkpoints/step_N --output_folder RUN/checkpoints/step_N/universal

- The global batch stays what the run config says (``train.global_batch``): gradient accumulation is
  recomputed for the new world size (``RunConfig.grad_accum``; a global batch that does not divide is a
  ``UserError`` before anything is written). The sampler's order is a pure function of consumed samples and
  the global batch (``pretrain.sampler``), so the resumed run trains on exactly the samples the
  uninterrupted run would have, split over the new ranks.
- Carried over: fp32 weights, Adam moments and step (from ``zero/``), the LR schedule, DeepSpeed's step
  counters and our client state (step, consumed samples, ALUM's ascent scaler) from the model-states file
  that ``ds_to_universal`` copies. Not carried over: the per-rank RNG streams (there is no meaningful
  mapping from 2 ranks' dropout streams to 1); each rank's RNGs are reseeded from (seed, rank, step), so a
  resumed run does not replay the dropout masks of its first steps. That, and the changed reduction order
  (2 ranks averaging vs 1 rank accumulating), is why a world-size change continues the loss curve within a
  tolerance instead of bit-exactly.
- DeepSpeed's ZeRO-3 universal loader copies the hyper-parameters of the first param group into every
  group (``for key, value in optim_sd[...]["param_groups"][0].items()`` in ``stage3.py``), which would put
  weight decay on biases and LayerNorm; ``load`` puts each group's own saved values back. It also hands
  every group the same Adam ``step`` tensor, which torch increments in place once per group; ``load``
  gives each group its own copy. (Found by the 2 → 1 ZeRO-3 test: with the shared step the resumed loss
  drifted from the uninterrupted run by 5e-4 within 3 steps; with both fixes it matches it.)

Anything that stops the conversion (a missing shard, a damaged file) is one ``UserError`` line on every
rank naming the checkpoint; the checkpoint is left as it was.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_tools.errors import UserError
from pretrain import checkpoint

UNIVERSAL = "universal"
"""Sub-directory of a checkpoint tag that holds its universal conversion."""

_RANK_FILE = re.compile(r"^trainer_state_rank(\d+)\.(?:pt|json)$")  # .json: written by newer versions
_SHARD = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


@dataclass(frozen=True)
class ResumePlan:
    """A resume across world sizes: load ``load_dir/UNIVERSAL`` with ``load_universal`` on."""

    tag: str
    saved_world_size: int
    world_size: int
    load_dir: Path
    """The checkpoint tag directory; DeepSpeed loads tag ``UNIVERSAL`` from it."""


def saved_world_size(tag_dir: Path) -> tuple[int, int]:
    """World size a checkpoint was written at, and how many ZeRO optimizer shards it holds (0: ZeRO-0).

    Raises:
        UserError when the per-rank files and the optimizer shards disagree (a damaged checkpoint).
    """
    names = [p.name for p in tag_dir.iterdir()] if tag_dir.is_dir() else []
    ranks = sorted(int(m.group(1)) for n in names if (m := _RANK_FILE.match(n)))
    shards = sorted(int(m.group(1)) for n in names if (m := _SHARD.match(n)))
    world = len(ranks) or len(shards)
    if world == 0:
        raise UserError(f"{tag_dir}: no per-rank trainer state and no ZeRO shards; not a checkpoint of this trainer")
    if ranks and ranks != list(range(world)):
        raise UserError(f"{tag_dir}: per-rank trainer states {ranks} are not ranks 0..{world - 1} (damaged checkpoint)")
    if shards and shards != list(range(world)):
        raise UserError(f"{tag_dir}: ZeRO optimizer shards of ranks {shards}, expected 0..{world - 1} "
                        "(damaged checkpoint)")
    return world, len(shards)


def plan(run_dir: str | Path, tag: str, world_size: int, rank: int) -> ResumePlan | None:
    """Decide how ``tag`` loads at ``world_size``; convert it to a universal checkpoint when needed.

    Every rank calls this after the process group is up; rank 0 converts, the others wait for its outcome.

    Returns:
        None when the checkpoint loads as saved (same world size, or ZeRO-0), else the ``ResumePlan``.
    Raises:
        UserError on every rank when the checkpoint cannot be converted (it is left untouched).
    """
    tag_dir = checkpoint.checkpoints_dir(run_dir) / tag
    saved, shards = saved_world_size(tag_dir)
    if saved == world_size or shards == 0:
        return None
    error = None
    if rank == 0:
        try:
            convert(tag_dir)
        except UserError as exc:
            error = str(exc)
        except Exception as exc:  # any failure must reach the waiting ranks, not leave them hanging
            error = f"{tag_dir}: cannot resume at another world size: {type(exc).__name__}: {exc}"
    error = _broadcast(error)
    if error is not None:
        raise UserError(error)
    return ResumePlan(tag=tag, saved_world_size=saved, world_size=world_size, load_dir=tag_dir)


def _broadcast(obj: Any) -> Any:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def convert(tag_dir: Path) -> Path:
    """Write ``tag_dir/universal`` with DeepSpeed's ``ds_to_universal`` (once; reused when complete).

    Returns:
        The universal directory. UserError (nothing left behind but the untouched checkpoint) on failure.
    """
    out = tag_dir / UNIVERSAL
    if (out / "zero" / "optimizer_state.pt").is_file():
        return out
    tmp = tag_dir / f"{UNIVERSAL}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    workers = str(max(1, min(4, os.cpu_count() or 1)))
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(tag_dir),
           "--output_folder", str(tmp), "--inject_missing_state",
           "--num_extract_workers", workers, "--num_merge_workers", "1"]
    print(f"converting {tag_dir} to a universal checkpoint (world size changed): {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # ds_to_universal writes `latest_universal` next to its output folder; the trainer never reads it.
    (tag_dir / "latest_universal").unlink(missing_ok=True)
    if proc.returncode != 0 or not (tmp / "zero" / "optimizer_state.pt").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [x for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        raise UserError(f"{tag_dir}: cannot resume at another world size: DeepSpeed's ds_to_universal failed "
                        f"({lines[-1].strip() if lines else f'exit {proc.returncode}'}); the checkpoint is unchanged")
    os.replace(tmp, out)
    return out


def deepspeed_overrides(resume: ResumePlan | None) -> dict[str, Any]:
    """DeepSpeed config keys for this start: ``checkpoint.load_universal`` on for a world-size change."""
    return {"checkpoint": {"load_universal": resume is not None}}


def load(engine, resume: ResumePlan, rank: int, seed: int) -> dict[str, Any]:
    """Load the universal conversion into an engine built with ``deepspeed_overrides(resume)``.

    Returns:
        The client state the trainer saved (step, consumed samples, ascent scaler, ...), with ``"rng"`` set
        to fresh RNG states seeded from (seed, rank, step).
    """
    path, client = engine.load_checkpoint(str(resume.load_dir), tag=UNIVERSAL, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if path is None or client is None:
        raise UserError(f"{resume.load_dir / UNIVERSAL}: DeepSpeed could not load this universal checkpoint")
    _restore_param_group_options(engine, resume.load_dir / UNIVERSAL / "zero" / "optimizer_state.pt")
    _unshare_step_counters(engine)
    return {**client, "rng": _fresh_rng(seed, rank, int(client["step"]))}


def _restore_param_group_options(engine, optimizer_state: Path) -> None:
    """Give every param group its own saved hyper-parameters (weight decay, betas, ...), not group 0's."""
    from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT, PARAM_GROUPS

    saved = torch.load(optimizer_state, map_location="cpu", weights_only=False)
    groups = saved.get(PARAM_GROUPS) or saved.get(OPTIMIZER_STATE_DICT, {}).get(PARAM_GROUPS)
    live = engine.optimizer.optimizer.param_groups if hasattr(engine.optimizer, "optimizer") else []
    if not groups or len(groups) != len(live):
        return
    for group, kept in zip(live, groups):
        for key, value in kept.items():
            if key not in ("params", "lr", "initial_lr"):  # the LR scheduler owns the learning rate
                group[key] = value


def _unshare_step_counters(engine) -> None:
    """Give every optimizer state its own ``step`` tensor.

    DeepSpeed's ZeRO-3 universal loader stores ONE step tensor in the state of every param group
    (``self.optimizer.state[fp32_param]['step'] = state_step`` in ``stage3.py``), and torch's Adam increments
    it in place once per group, so with two groups (decay / no decay) Adam's bias correction would count
    two steps per step."""
    opt = getattr(engine.optimizer, "optimizer", None)
    for state in getattr(opt, "state", {}).values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _fresh_rng(seed: int, rank: int, step: int) -> dict[str, Any]:
    """RNG states for ``checkpoint.set_rng_state``, seeded from (seed, rank, step), without touching the
    process's current RNGs."""
    state = checkpoint.rng_state()
    mixed = int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])
    random.seed(mixed)
    np.random.seed(mixed)
    torch.manual_seed(mixed)
    fresh = checkpoint.rng_state()
    checkpoint.set_rng_state(state)
    return fresh
