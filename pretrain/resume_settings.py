"""What a resumed run may change, and the record of what changed.

A rerun of ``python -m pretrain train`` against a run directory continues from a checkpoint, whose weights,
optimizer moments, data position and RNG states were made under the settings saved with it
(``checkpoints/step_<N>/run_config.json``). The new settings are compared with those:

* settings that cannot change mid-run (model shape, data, tokenizer, seed, global batch, ALUM objective,
  optimizer kind and moments' hyper-parameters, DeepSpeed JSON) are refused in one line naming each key;
* settings that may change (the LR schedule: peak, floor, warmup and where it ends, i.e. ``train_steps``/
  ``train_tokens``; clipping; intervals, eval, logging, micro batch, loader workers) are applied for real
  (``apply_lr_schedule`` rewrites the restored scheduler) and appended to ``RUN_DIR/config_history.jsonl``
  as ``{"step", "time", "changes": {key: [old, new]}}``.

``RUN_DIR/config.json`` is the config the run started with and is never rewritten; the settings in force
at any step are that file plus the history's changes up to that step (and every checkpoint holds its own).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from data_tools.atomic import write_json, write_text
from data_tools.errors import UserError
from pretrain.config import RunConfig, config_dump

# Dotted keys (or whole sections, ending in ".") that a resume may change; everything else is fixed.
MAY_CHANGE = (
    "optim.lr", "optim.min_lr", "optim.warmup_steps", "optim.warmup_ratio", "optim.clip_grad",
    "train.train_steps", "train.train_tokens", "train.log_interval", "train.eval_interval", "train.eval_batches",
    "train.save_interval", "train.keep_last", "train.exit_interval", "train.peak_tflops", "train.progress",
    "train.log_sample_ids", "train.micro_batch", "data.num_workers", "data.cache_dir",
)
# Not settings of the run: where it lives (a run directory may be moved) and how this launch resumes.
IGNORED = ("train.output_dir", "train.resume")

CONFIG_FILE = "run_config.json"
"""Name of the settings file each checkpoint directory holds (written by ``checkpoint.save``)."""
HISTORY = "config_history.jsonl"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def saved_settings(run_dir: str | Path, tag: str) -> dict[str, Any] | None:
    """The settings a checkpoint was made under (its ``run_config.json``; else the run's ``config.json``)."""
    run_dir = Path(run_dir)
    for path in (run_dir / "checkpoints" / tag / CONFIG_FILE, run_dir / "config.json"):
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"{path}: cannot read the settings of checkpoint {tag} ({exc})") from None
    return None


def compare(old: dict[str, Any], cfg: RunConfig) -> dict[str, list]:
    """``{key: [old, new]}`` of every setting that differs; UserError if one of them may not change."""
    before, after = _flatten(old), _flatten(config_dump(cfg))
    changed = {k: [before.get(k), after.get(k)] for k in sorted(before.keys() | after.keys())
               if before.get(k) != after.get(k) and k not in IGNORED}
    fixed = [k for k in changed if k not in MAY_CHANGE]
    if fixed:
        what = ", ".join(f"{k} {changed[k][0]!r} -> {changed[k][1]!r}" for k in fixed)
        raise UserError(
            f"train.resume: {what}: cannot change in a resumed run (the checkpoint was made with the old value); "
            "rerun with the checkpoint's settings, or start a new run with another train.output_dir"
        )
    return changed


def check_resume(cfg: RunConfig, run_dir: str | Path, tag: str, step: int) -> dict[str, list]:
    """Compare ``cfg`` with the settings of checkpoint ``tag`` (at ``step``); return the allowed changes.

    Raises:
        UserError: a fixed setting changed, or the run would end before the checkpoint's step.
    """
    old = saved_settings(run_dir, tag)
    changed = compare(old, cfg) if old is not None else {}
    if cfg.total_steps() < step:
        key = "train.train_steps" if cfg.train.train_steps is not None else "train.train_tokens"
        raise UserError(f"{key}: the run would end at step {cfg.total_steps()}, but checkpoint {tag} has already "
                        f"trained {step} steps; expected at least {step} (or start a new run)")
    return changed


def record_changes(run_dir: str | Path, step: int, changes: dict[str, list]) -> None:
    """Append ``{"step", "time", "changes"}`` to ``RUN_DIR/config_history.jsonl`` (rank 0, atomic rewrite).

    Rows after ``step`` describe a stretch of the run that the resume replaces (like the metrics a resume
    trims) and are dropped; a row at ``step`` itself (an earlier resume from the same checkpoint that died
    before its next save) is replaced.
    """
    path = Path(run_dir) / HISTORY
    if not changes and not path.exists():
        return
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []
    rows = [r for r in rows if r.get("step", 0) < step]
    if changes:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        rows.append({"step": step, "time": now, "changes": changes})
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_initial_config(run_dir: str | Path, cfg: RunConfig) -> None:
    """Write ``RUN_DIR/config.json`` once, when the run starts; a resume never rewrites it."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        write_json(path, config_dump(cfg))


def apply_lr_schedule(engine, cfg: RunConfig) -> None:
    """Make the restored LR scheduler follow ``cfg``'s schedule from the checkpoint's step on.

    DeepSpeed restores ``LambdaLR``'s ``base_lrs`` and the optimizer's current ``lr`` from the checkpoint,
    and keeps the multiplier function built from this run's config: without this a new ``optim.lr`` would be
    silently ignored, and the first resumed step would use the old schedule's rate.
    """
    sched = getattr(engine, "lr_scheduler", None)
    if sched is None or not hasattr(sched, "lr_lambdas"):
        return
    from pretrain.engine import lr_lambda

    fn = lr_lambda(cfg)
    sched.lr_lambdas = [fn] * len(sched.optimizer.param_groups)
    sched.base_lrs = [cfg.optim.lr] * len(sched.optimizer.param_groups)
    for group in sched.optimizer.param_groups:
        group["initial_lr"] = cfg.optim.lr
        group["lr"] = cfg.optim.lr * fn(sched.last_epoch)
    sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
