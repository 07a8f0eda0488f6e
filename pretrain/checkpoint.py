"""Checkpoints of a run directory: DeepSpeed's ``save_checkpoint`` plus our client state, and ``latest``.

Layout (DESIGN.md)::

    RUN_DIR/checkpoints/step_<N>/        DeepSpeed's files (model, ZeRO shards, optimizer, LR schedule,
                                         client state: consumed samples, step, config)
    RUN_DIR/checkpoints/step_<N>/trainer_state_rank<R>.json per-rank RNG states (python, numpy, torch)
    RUN_DIR/checkpoints/step_<N>/run_config.json         the settings the checkpoint was made under
    RUN_DIR/checkpoints/step_<N>/manifest.json           every file of the checkpoint and its size
    RUN_DIR/latest                       the tag of the newest COMPLETE checkpoint

``latest`` is written last, atomically, after every rank has finished writing, so a job killed in the
middle of a save leaves the previous ``latest`` (and its checkpoint) untouched; resume uses ``latest`` only.
A save's directory that ``latest`` never pointed to is an unfinished save and is removed on resume.
"""

from __future__ import annotations

import contextlib
import errno
import json
import pickle
import random
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_tools.atomic import write_json, write_text
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


# Types DeepSpeed 0.19's checkpoint files hold besides tensors and plain containers (found with
# torch.serialization.get_unsafe_globals_in_checkpoint on ZeRO 0-3 fp32/bf16 checkpoints); plain data
# classes and enums, so letting the weights-only unpickler build them runs no code of the file's choosing.
def _deepspeed_globals() -> list:
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


@contextlib.contextmanager
def weights_only_loads(trust: bool = False) -> Iterator[None]:
    """Within the block every ``torch.load`` (ours and DeepSpeed's, which passes ``weights_only=False``) runs
    with ``weights_only=True`` and the allow-list above: a checkpoint can carry tensors and data, not code.
    A file that needs anything else is refused with one line naming it; ``trust`` (``--trust-checkpoint``)
    restores DeepSpeed's own loading for a checkpoint whose origin the user vouches for."""
    if trust:
        yield
        return
    real = torch.load

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return real(f, *args, **kwargs)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = found.group(1) if found else str(exc).splitlines()[0]
            raise UserError(f"{f}: refusing to load: it holds {what}, which no checkpoint of ours holds (unpickling "
                            "it could run code from the file); if you made this checkpoint yourself and trust it, "
                            "pass --trust-checkpoint") from None

    with torch.serialization.safe_globals(_deepspeed_globals()):
        torch.load = load
        try:
            yield
        finally:
            torch.load = real


def rng_state() -> dict[str, Any]:
    """Every RNG a step draws from (dropout, ALUM's δ init, anything seeded by python/numpy)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _rng_to_json(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    out = {"python": [version, list(internal), gauss],
           "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
           "torch": state["torch"].tolist()}
    if "cuda" in state:
        out["cuda"] = state["cuda"].tolist()
    return out


def _rng_from_json(state: dict[str, Any]) -> dict[str, Any]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    out = {"python": (version, tuple(internal), gauss),
           "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
           "torch": torch.tensor(state["torch"], dtype=torch.uint8)}
    if "cuda" in state:
        out["cuda"] = torch.tensor(state["cuda"], dtype=torch.uint8)
    return out


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
    try:
        # save_latest=False: DeepSpeed's own marker would be written before our per-rank files are complete.
        engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
        # JSON, not a pickle: our own state cannot carry code.
        write_json(root / tag / f"trainer_state_rank{rank}.json", {"rng": _rng_to_json(rng_state()), "step": step})
        if rank == 0 and "config" in client_state:  # the settings this checkpoint was made under (resume compares)
            write_json(root / tag / "run_config.json", client_state["config"])
    except (OSError, RuntimeError) as exc:
        raise _save_error(run_dir, tag, exc) from None
    _barrier()
    if rank == 0:
        # Every file and its size, once all ranks are done: resume tells a complete checkpoint from a damaged one.
        files = {p.name: p.stat().st_size for p in sorted((root / tag).iterdir()) if p.is_file()}
        write_json(root / tag / MANIFEST, {"files": files})
        write_text(Path(run_dir) / "latest", tag + "\n")
        for old in complete_tags(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return tag


def _save_error(run_dir: str | Path, tag: str, exc: BaseException) -> BaseException:
    """A failed save as one line when the disk is full (torch's C++ writer only says ``basic_ios::clear:
    iostream error``); any other error unchanged. ``latest`` still names the previous complete checkpoint."""
    from data_tools.atomic import mount_point

    tag_dir = checkpoints_dir(run_dir) / tag
    if isinstance(exc, UserError):
        return exc
    try:
        free = shutil.disk_usage(checkpoints_dir(run_dir)).free
    except OSError:
        return exc
    latest = read_latest(run_dir)
    needed = sum(p.stat().st_size for p in (checkpoints_dir(run_dir) / latest).iterdir()) if latest else 64 << 20
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not (full or free < needed):
        return exc
    kept = f"latest still names {latest}" if latest else "no checkpoint was completed"
    return UserError(f"no space left on {mount_point(checkpoints_dir(run_dir))} while writing checkpoint {tag_dir} "
                     f"({free:,} bytes free); {kept}; free space, then rerun to resume")


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


def load(engine, run_dir: str | Path, tag: str, rank: int, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint into the engine (weights, optimizer, LR schedule); read this rank's RNG states.

    Args:
        engine: The DeepSpeed engine, built with the same model and world size as the saving run.
        run_dir: The run directory.
        tag: From ``resolve_tag``.
        rank: This process's global rank.
        trust: Load with DeepSpeed's ``weights_only=False`` (``--trust-checkpoint``).
    Returns:
        The client state given to ``save``, plus ``"rng"`` (this rank's RNG states, when saved with the
        same world size): pass it to ``set_rng_state`` right before the next step.
    """
    root = checkpoints_dir(run_dir)
    with weights_only_loads(trust):
        try:
            path, client = engine.load_checkpoint(
                str(root), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
            )
        except UserError:
            raise
        except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
            raise UserError(f"{root / tag}: cannot load this checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); {_older_hint(run_dir, tag)}") from None
        if path is None or client is None:
            raise UserError(f"{root / tag}: DeepSpeed could not load this checkpoint (incomplete or another "
                            f"model); {_older_hint(run_dir, tag)}")
        rank_json = root / tag / f"trainer_state_rank{rank}.json"
        rank_pt = root / tag / f"trainer_state_rank{rank}.pt"  # written by earlier versions
        if rank_json.exists():
            client = {**client, "rng": _rng_from_json(json.loads(rank_json.read_text(encoding="utf-8"))["rng"])}
        elif rank_pt.exists():
            core = getattr(np, "_core", None) or np.core
            with torch.serialization.safe_globals([core.multiarray._reconstruct, np.ndarray, np.dtype]):
                client = {**client, "rng": torch.load(rank_pt)["rng"]}
    return client


MANIFEST = "manifest.json"


def _older_hint(run_dir: str | Path, tag: str) -> str:
    older = [p.name for p in complete_tags(run_dir) if step_of(p.name) < step_of(tag)] if _TAG.match(tag) else []
    if older:
        return f"resume from an older one with --train.resume {older[-1]} (have: {', '.join(older)})"
    return "no older checkpoint to resume from (start a new run with --train.resume never in a new directory)"


def damage(run_dir: str | Path, tag: str) -> str | None:
    """Why checkpoint ``tag`` cannot be loaded (a file missing, truncated or not a readable archive), or None.

    Cheap: sizes against the manifest written at save time, and each ``.pt`` file's zip directory (at its
    end, so a truncated file fails). Every rank checks every file, so all ranks take the same decision.
    """
    tag_dir = checkpoints_dir(run_dir) / tag
    if not tag_dir.is_dir():
        return f"{tag_dir}: checkpoint directory missing"
    manifest = tag_dir / MANIFEST
    if manifest.exists():
        try:
            files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{manifest}: unreadable ({exc})"
        for name, size in files.items():
            path = tag_dir / name
            if not path.is_file():
                return f"{path}: missing"
            if path.stat().st_size != size:
                return f"{path}: {path.stat().st_size} bytes, {size} when saved (truncated or changed)"
    for path in sorted(tag_dir.glob("*.pt")):
        try:
            with zipfile.ZipFile(path):
                pass
        except (OSError, zipfile.BadZipFile) as exc:
            return f"{path}: not a complete checkpoint file ({exc})"
    return None


def usable_tag(run_dir: str | Path, tag: str, fall_back: bool) -> str:
    """``tag`` if its files are intact; else (``fall_back``: resuming from ``latest``) the newest older complete
    checkpoint, with a warning; else UserError naming the damage and the ``--train.resume`` to use."""
    why = damage(run_dir, tag)
    if why is None:
        return tag
    if fall_back:
        for older in reversed([p.name for p in complete_tags(run_dir) if step_of(p.name) < step_of(tag)]):
            if damage(run_dir, older) is None:
                print(f"warning: checkpoint {tag} is damaged ({why}); resuming from {older}", file=sys.stderr,
                      flush=True)
                return older
    raise UserError(f"checkpoint {tag} is damaged ({why}); {_older_hint(run_dir, tag)}")


def consolidated_state_dict(run_dir: str | Path, tag: str, trust: bool = False) -> dict[str, torch.Tensor]:
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
    why = damage(run_dir, tag)
    if why is not None:
        older = [p.name for p in complete_tags(run_dir) if _TAG.match(tag) and step_of(p.name) < step_of(tag)]
        hint = f"export an older one with --step {step_of(older[-1])} (have: {', '.join(older)})" if older else \
            "no older checkpoint to export"
        raise UserError(f"checkpoint {tag} is damaged ({why}); {hint}")
    with weights_only_loads(trust):
        if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

            sd = get_fp32_state_dict_from_zero_checkpoint(str(root), tag=tag)
        else:
            # ZeRO stage 0 writes the whole module into mp_rank_00_model_states.pt.
            sd = torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=not trust)["module"]
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
