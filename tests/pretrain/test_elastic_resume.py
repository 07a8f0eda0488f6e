"""Resume at another world size (pretrain/elastic.py), under the deepspeed launcher, ZeRO-2 and ZeRO-3.

One run of 9 steps changes world size twice: 1 process for steps 1–3, 2 processes for steps 4–6 (1 → 2
through the universal checkpoint of step_3), 1 process for steps 7–9 (2 → 1 through that of step_6).
Against an uninterrupted 1-process run: every step trains on exactly the same samples (sample-id logs),
the losses and the final fp32 weights agree (fp32; only the reduction order differs, 2 ranks averaging vs
1 rank accumulating two micro-batches), which also needs the Adam moments, Adam's step and the LR schedule
to have carried over. A checkpoint that cannot be converted is refused in one line and left untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from engine_kit import (
    VENV_BIN,
    child_env,
    free_port,
    metrics,
    run_cli,
    tiny_config,
    tiny_corpus,
    write_config,
)

from data_tools.errors import UserError
from pretrain import checkpoint, elastic

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]

# Losses and weights of the resumed run against the uninterrupted one. fp32 with a hidden-32 model: the
# only difference is summation order (measured here: losses identical, weights within 3e-7); 1e-5 is the bound
# test_launchers.py uses for 2 ranks vs 1 rank × 2 accumulation steps.
TOL = 1e-5


def _launch(config: Path, nproc: int, *extra: str):
    cmd = [str(VENV_BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", str(free_port()),
           "--module", "pretrain", "train", "--config", str(config), *extra]
    proc = run_cli(cmd, env=child_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _ids_per_step(run_dir: Path) -> dict[int, list[int]]:
    """Sample ids each optimizer step trained on, over all ranks (rank 0's micro-batch first)."""
    out: dict[int, list[int]] = {}
    for path in sorted((run_dir / "sample_ids").glob("rank*.jsonl")):
        for row in map(json.loads, path.read_text().splitlines()):
            out.setdefault(row["step"], []).extend(row["ids"])
    return out


@pytest.fixture(scope="module", params=[2, 3], ids=["zero2", "zero3"])
def runs(request, tmp_path_factory):
    stage = request.param
    tmp = tmp_path_factory.mktemp(f"zero{stage}")
    corpus = tiny_corpus(str(tmp_path_factory.getbasetemp() / "corpus"))
    common = {"train_steps": 9, "save_interval": 3, "log_sample_ids": True, "keep_last": 5}
    ref_cfg = write_config(tmp / "ref.json", tiny_config(tmp, corpus, f"zero{stage}_fp32.json",
                                                         train={**common, "output_dir": str(tmp / "ref")}))
    _launch(ref_cfg, 1)
    # The elastic run starts as the reference's first 3 steps (a copy whose `latest` is step_3: the newer
    # tags count as unfinished saves and are removed on resume), then goes on at 2 processes, then at 1.
    shutil.copytree(tmp / "ref", tmp / "elastic")
    (tmp / "elastic" / "latest").write_text("step_3\n")
    cfg = write_config(tmp / "elastic.json", tiny_config(tmp, corpus, f"zero{stage}_fp32.json",
                                                         train={**common, "output_dir": str(tmp / "elastic")}))
    up = _launch(cfg, 2, "--train.exit_interval", "6")
    down = _launch(cfg, 1)
    return {"stage": stage, "ref": tmp / "ref", "run": tmp / "elastic", "logs": up.stdout + down.stdout}


def test_world_size_changes_continue_the_run(runs):
    ref, run = runs["ref"], runs["run"]
    # Both transitions went through a universal conversion, each once, next to the original tag.
    assert runs["logs"].count("to a universal checkpoint (world size changed)") == 2
    for tag in ("step_3", "step_6"):
        assert (run / "checkpoints" / tag / elastic.UNIVERSAL / "zero" / "optimizer_state.pt").is_file()
    assert (elastic.saved_world_size(run / "checkpoints" / "step_6")[0],
            elastic.saved_world_size(run / "checkpoints" / "step_9")[0]) == (2, 1)

    # The sample stream: per optimizer step, the same ids in the same order, none skipped or repeated.
    want, got = _ids_per_step(ref), _ids_per_step(run)
    assert sorted(got) == list(range(1, 10)) and got == want
    seen = [i for ids in got.values() for i in ids]
    assert len(seen) == len(set(seen)) == 9 * 8

    # The loss curve and the weights continue the uninterrupted run.
    a, b = metrics(ref), metrics(run)
    assert [r["step"] for r in b] == list(range(1, 10))
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) <= TOL, (ra, rb)
        assert ra["lr"] == pytest.approx(rb["lr"], abs=1e-12)
    wa = checkpoint.consolidated_state_dict(ref, "step_9")
    wb = checkpoint.consolidated_state_dict(run, "step_9")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=TOL, rtol=0)

    # Our client state (step, consumed samples, ALUM's ascent scaler) travels in the copied model-states file.
    name = "zero_pp_rank_0_mp_rank_00_model_states.pt" if runs["stage"] == 3 else "mp_rank_00_model_states.pt"
    src = torch.load(run / "checkpoints" / "step_6" / name, map_location="cpu", weights_only=False)
    uni = torch.load(run / "checkpoints" / "step_6" / elastic.UNIVERSAL / name, map_location="cpu",
                     weights_only=False)
    assert uni["ascent_scaler"] == src["ascent_scaler"] and uni["consumed_samples"] == src["consumed_samples"] == 48


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_unconvertible_checkpoint_is_refused_and_kept(runs, tmp_path):
    """A 2-process checkpoint that lost part of an optimizer shard: one UserError line, nothing changed.
    ZeRO-2: a truncated shard, which DeepSpeed's converter fails on. ZeRO-3: a missing shard, named before
    DeepSpeed is asked."""
    tag_dir = tmp_path / "run" / "checkpoints" / "step_6"
    shutil.copytree(runs["run"] / "checkpoints" / "step_6", tag_dir, ignore=shutil.ignore_patterns("universal"))
    shard = next(tag_dir.glob("*zero_pp_rank_1_*optim_states.pt"))
    if runs["stage"] == 2:
        shard.write_bytes(shard.read_bytes()[:100])
        needle = "cannot resume at another world size: DeepSpeed's ds_to_universal failed"
    else:
        shard.unlink()
        needle = "ZeRO optimizer shards of ranks [0], expected 0..1 (damaged checkpoint)"
    before = _snapshot(tag_dir)
    with pytest.raises(UserError) as err:
        elastic.plan(tmp_path / "run", "step_6", world_size=1, rank=0)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert _snapshot(tag_dir) == before
