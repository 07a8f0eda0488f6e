"""Checkpoints of a run directory: DeepSpeed's ``save_checkpoint`` plus our client state, and ``latest``.

Layout (DESIGN.md)::

    RUN_DIR/checkpoints/step_<N>/        DeepSpeed's files (model, ZeRO shards, optimizer, LR schedule,
                                         client state: consumed samples, step, config)
    RUN_DIR/checkpoints/step_<N>/trainer_state_rank<R>.pt   per-rank RNG states (python, numpy, torch)
    RUN_DIR/latest                       the tag of the newest COMPLETE checkpoint

``latest`` is written last, atomically, after every rank has finished writing, so a job killed in the
middle of a save leaves the previous ``latest`` (and its checkpoint) untouched; resume uses ``latest`` only.
A save's directory that ``latest`` never pointed to is an unfinished save and is removed on resume.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_tools.atomic import atomic_path, write_json, write_text
from data_tools.errors import UserError

_TAG = re.compile(r"^step_(\d+)$")


def tag_for(step: int) -> str:
    """Checkpoint tag of an optimizer step."""
    return f"step_{step}"


def step_of(tag: str) -> int:
    """Optimizer step of a checkpoint tag (UserError for a tag we did not write)."""
    m = _TAG.match(tag)
    if not m:
        raise UserError(f"checkpoint tag {tag!r}: expected step_<N>")
    return int(m.group(1))


def checkpoints_dir(run_dir: str | Path) -> Path:
    """Where the checkpoint tags of a run live."""
    return Path(run_dir) / "checkpoints"


def read_latest(run_dir: str | Path) -> str | None:
    """The tag in ``RUN_DIR/latest``, or None when the run has no complete checkpoint yet."""
    marker = Path(run_dir) / "latest"
    if not marker.exists():
        return None
    tag = marker.read_text(encoding="utf-8").strip()
    if not _TAG.match(tag) or not (checkpoints_dir(run_dir) / tag).is_dir():
        raise UserError(f"{marker}: names checkpoint {tag!r}, which is not in {checkpoints_dir(run_dir)}")
    return tag


def resolve_tag(run_dir: str | Path, step: int | None = None) -> str:
    """The tag to load: ``step_<step>`` if given (must exist), else ``latest``; UserError if none."""
    if step is not None:
        tag = tag_for(step)
        if not (checkpoints_dir(run_dir) / tag).is_dir():
            have = sorted((p.name for p in complete_tags(run_dir)), key=step_of)
            raise UserError(f"{run_dir}: no checkpoint for step {step} (have: {', '.join(have) or 'none'})")
        return tag
    tag = read_latest(run_dir)
    if tag is None:
        raise UserError(f"{run_dir}: no complete checkpoint (missing {Path(run_dir) / 'latest'})")
    return tag


def complete_tags(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories up to and including ``latest`` (newer ones are unfinished saves)."""
    latest = read_latest(run_dir)
    if latest is None:
        return []
    limit = step_of(latest)
    root = checkpoints_dir(run_dir)
    return sorted(
        (p for p in root.iterdir() if _TAG.match(p.name) and step_of(p.name) <= limit), key=lambda p: step_of(p.name)
    )


def rng_state() -> dict[str, Any]:
    """Every RNG a step draws from (dropout, ALUM's δ init, anything seeded by python/numpy)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def save(engine, run_dir: str | Path, step: int, client_state: dict[str, Any], rank: int, keep_last: int) -> str:
    """Save a checkpoint on every rank, then (rank 0) point ``latest`` at it and drop old ones.

    Args:
        engine: The DeepSpeed engine.
        run_dir: The run directory.
        step: Optimizer steps done.
        client_state: Our resumable state (consumed samples, config, ...); stored by DeepSpeed.
        rank: This process's global rank.
        keep_last: How many complete checkpoints to keep.
    Returns:
        The tag written.
    """
    tag = tag_for(step)
    root = checkpoints_dir(run_dir)
    # save_latest=False: DeepSpeed's own marker would be written before our per-rank files are complete.
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    with atomic_path(root / tag / f"trainer_state_rank{rank}.pt") as tmp:
        torch.save({"rng": rng_state(), "step": step}, tmp)
    if rank == 0 and "config" in client_state:  # the settings this checkpoint was made under (resume compares)
        write_json(root / tag / "run_config.json", client_state["config"])
    _barrier()
    if rank == 0:
        write_text(Path(run_dir) / "latest", tag + "\n")
        for old in complete_tags(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return tag


def remove_unfinished(run_dir: str | Path, rank: int) -> None:
    """Remove checkpoint directories newer than ``latest`` (a save that was killed); rank 0 only."""
    root = checkpoints_dir(run_dir)
    if rank == 0 and root.is_dir():
        latest = read_latest(run_dir)
        limit = -1 if latest is None else step_of(latest)
        for p in root.iterdir():
            if _TAG.match(p.name) and step_of(p.name) > limit:
                shutil.rmtree(p, ignore_errors=True)
    _barrier()


def load(engine, run_dir: str | Path, tag: str, rank: int) -> dict[str, Any]:
    """Load a checkpoint into the engine (weights, optimizer, LR schedule); read this rank's RNG states.

    Args:
        engine: The DeepSpeed engine, built with the same model and world size as the saving run.
        run_dir: The run directory.
        tag: From ``resolve_tag``.
        rank: This process's global rank.
    Returns:
        The client state given to ``save``, plus ``"rng"`` (this rank's RNG states, when saved with the
        same world size): pass it to ``set_rng_state`` right before the next step.
    """
    root = checkpoints_dir(run_dir)
    path, client = engine.load_checkpoint(
        str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None or client is None:
        raise UserError(f"{root / tag}: DeepSpeed could not load this checkpoint (incomplete or another model)")
    rank_file = root / tag / f"trainer_state_rank{rank}.pt"
    if rank_file.exists():
        client = {**client, "rng": torch.load(rank_file, weights_only=False)["rng"]}
    return client


def consolidated_state_dict(run_dir: str | Path, tag: str) -> dict[str, torch.Tensor]:
    """fp32 weights of a checkpoint, gathered from ZeRO shards with DeepSpeed's zero-to-fp32 utilities.

    Args:
        run_dir: The run directory.
        tag: A checkpoint tag.
    Returns:
        The engine module's state dict (fp32, CPU).
    """
    root = checkpoints_dir(run_dir)
    tag_dir = root / tag
    if not tag_dir.is_dir():
        raise UserError(f"{tag_dir}: checkpoint not found")
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        sd = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
    else:
        # ZeRO stage 0 writes the whole module into mp_rank_00_model_states.pt.
        states = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        sd = states["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
