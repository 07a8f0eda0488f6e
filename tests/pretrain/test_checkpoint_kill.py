"""A trainer SIGKILLed inside ``save_checkpoint`` leaves the previous checkpoint as ``latest``; resume works."""

from __future__ import annotations

import signal
import sys

import pytest
from engine_kit import child_env, free_port, metrics, run_cli, tiny_config, tiny_corpus, write_config

from pretrain import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]

# The real CLI, with DeepSpeed's ZeRO-shard writer replaced by a SIGKILL at step 4: by then the model
# states of step_4 are on disk, the optimizer shards are not, and `latest` still names step_2.
KILL_DURING_SAVE = """
import os, signal
from deepspeed.runtime.engine import DeepSpeedEngine
orig = DeepSpeedEngine._save_zero_checkpoint
def killer(self, save_path, tag):
    if tag == "step_4":
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, save_path, tag)
DeepSpeedEngine._save_zero_checkpoint = killer
from data_tools.errors import run_cli
from pretrain.__main__ import main
run_cli(main)
"""


def test_sigkill_during_save_keeps_previous_latest(tmp_path, tmp_path_factory):
    corpus = tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    raw = tiny_config(tmp_path, corpus, "zero2_fp32.json", train={"train_steps": 6, "save_interval": 2})
    config = write_config(tmp_path / "run.json", raw)
    run_dir = tmp_path / "run"
    cmd = ["train", "--config", str(config)]

    proc = run_cli([sys.executable, "-c", KILL_DURING_SAVE, *cmd], env=child_env(MASTER_PORT=str(free_port())))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint.read_latest(run_dir) == "step_2"
    partial = run_dir / "checkpoints" / "step_4"
    assert (partial / "mp_rank_00_model_states.pt").exists()
    assert not list(partial.glob("*optim_states.pt"))

    proc = run_cli([sys.executable, "-m", "pretrain", *cmd], env=child_env(MASTER_PORT=str(free_port())))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert checkpoint.read_latest(run_dir) == "step_6"
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert len(list((run_dir / "checkpoints" / "step_4").glob("*optim_states.pt"))) == 1
