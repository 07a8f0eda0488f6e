"""Two CPU processes under each launcher (deepspeed, torchrun, mpirun) × ZeRO 2 and 3, and the
data-parallel equivalence 2 ranks × micro b == 1 rank × micro b × 2 accumulation steps."""

from __future__ import annotations

import json
import sys
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
    write_config,
)

from pretrain import checkpoint
from pretrain.config import build_config
from pretrain.train import build_export_model

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def launch(launcher: str, config: Path, nproc: int = 2, port: int | None = None) -> list[str]:
    """The command that starts ``python -m pretrain train`` on ``nproc`` local CPU processes."""
    port = str(port or free_port())
    entry = ["pretrain", "train", "--config", str(config)]
    if launcher == "deepspeed":
        return [str(VENV_BIN / "deepspeed"), "--num_gpus", str(nproc), "--master_port", port, "--module", *entry]
    if launcher == "torchrun":
        return [str(VENV_BIN / "torchrun"), "--nproc_per_node", str(nproc), "--master_port", port, "-m", *entry]
    return [str(VENV_BIN / "mpirun"), "-np", str(nproc), "--allow-run-as-root", "--oversubscribe",
            "-x", f"MASTER_PORT={port}", sys.executable, "-m", *entry]


def sample_ids(run_dir: Path, rank: int) -> dict[int, list[int]]:
    rows = map(json.loads, (run_dir / "sample_ids" / f"rank{rank}.jsonl").read_text().splitlines())
    out: dict[int, list[int]] = {}
    for r in rows:
        out.setdefault(r["step"], []).extend(r["ids"])
    return out


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun", "mpirun"])
def test_two_processes(tmp_path, corpus, launcher, stage):
    raw = tiny_config(tmp_path, corpus, f"zero{stage}_fp32.json",
                      train={"train_steps": 8, "save_interval": 4, "log_sample_ids": True, "eval_interval": 8})
    port = free_port()
    proc = run_cli(launch(launcher, write_config(tmp_path / "run.json", raw), port=port))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    # DeepSpeed's CPU shared-memory allreduce workspace (66 MB a rank, created under the deepspeed launcher)
    # must not outlive the run: /dev/shm is RAM.
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))

    ids0, ids1 = sample_ids(run_dir, 0), sample_ids(run_dir, 1)
    assert sorted(ids0) == sorted(ids1) == list(range(1, 9))
    for step in ids0:
        assert len(ids0[step]) == len(ids1[step]) == 4  # micro 4, no accumulation (global 8 = 4 × 2)
    seen0 = {i for ids in ids0.values() for i in ids}
    seen1 = {i for ids in ids1.values() for i in ids}
    assert len(seen0) == len(seen1) == 32 and not seen0 & seen1

    losses = [r["loss"] for r in metrics(run_dir)]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])

    assert checkpoint.read_latest(run_dir) == "step_8"
    assert {p.name for p in (run_dir / "checkpoints" / "step_8").glob("trainer_state_rank*.json")} == {
        "trainer_state_rank0.json", "trainer_state_rank1.json"}
    cfg = build_config(json.loads((run_dir / "config.json").read_text()))
    from data_tools.tokenizer import load_tokenizer

    model = build_export_model(cfg, load_tokenizer(cfg.data.tokenizer))
    model.load_state_dict(checkpoint.consolidated_state_dict(run_dir, "step_8"), strict=True)
    assert "final step 8: eval" in proc.stdout


def test_two_ranks_equal_one_rank_with_accumulation(tmp_path, corpus):
    """Same samples per optimizer step; fp32 losses agree to 1e-5 and so do the final weights."""
    common = {"train_steps": 5, "save_interval": 0, "log_sample_ids": True}
    one = tiny_config(tmp_path, corpus, "zero2_fp32.json", train={**common, "output_dir": str(tmp_path / "one")})
    two = tiny_config(tmp_path, corpus, "zero2_fp32.json", train={**common, "output_dir": str(tmp_path / "two")})
    proc = run_cli([sys.executable, "-m", "pretrain", "train", "--config", str(write_config(tmp_path / "1.json", one))],
                   env=child_env(MASTER_PORT=str(free_port())))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(launch("torchrun", write_config(tmp_path / "2.json", two)))
    assert proc.returncode == 0, proc.stderr[-3000:]

    # One rank with 2 accumulation steps saw, per step, exactly the union of what the two ranks saw.
    one_ids = sample_ids(tmp_path / "one", 0)
    two_ids = {s: ids + sample_ids(tmp_path / "two", 1)[s] for s, ids in sample_ids(tmp_path / "two", 0).items()}
    assert one_ids == two_ids
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(a) == len(b) == 5
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) < 1e-5, (ra, rb)
    wa = checkpoint.consolidated_state_dict(tmp_path / "one", "step_5")
    wb = checkpoint.consolidated_state_dict(tmp_path / "two", "step_5")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)
