"""kill -9 of a trainer whose data workers are running, then the same command at once: the rerun gets the
rendezvous port (the workers die with the trainer; rank 0 waits a moment for a port still held) and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from engine_kit import ROOT, child_env, free_port, metrics, run_cli, tiny_config, tiny_corpus, write_config

from pretrain import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie holds no socket
    except OSError:
        return False


def test_busy_port_waits_then_names_it():
    import socket
    import threading

    from data_tools.errors import UserError
    from pretrain.dist import wait_for_port

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with pytest.raises(UserError, match=rf"MASTER_PORT {port} on 127.0.0.1 is in use"):
        wait_for_port("127.0.0.1", port, timeout=1.0)
    threading.Timer(0.5, holder.close).start()
    start = time.monotonic()
    wait_for_port("127.0.0.1", port, timeout=20.0)  # released meanwhile: returns
    assert time.monotonic() - start < 10


def test_rerun_right_after_kill_minus_9(tmp_path, tmp_path_factory):
    corpus = tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    raw = tiny_config(tmp_path, corpus, "zero2_fp32.json",
                      data={"num_workers": 2}, train={"train_steps": 400, "save_interval": 2})
    config = write_config(tmp_path / "run.json", raw)
    run_dir = tmp_path / "run"
    env = child_env(MASTER_PORT=str(free_port()))
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "train", "--config", str(config)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while checkpoint.read_latest(run_dir) is None or len(metrics(run_dir)) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:] if proc.poll() else ""
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert workers, "expected DataLoader worker processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The workers go with their trainer (they used to linger ~5 s, holding the inherited rendezvous socket).
    gone_by = time.monotonic() + 1.0
    while [w for w in workers if _alive(w)] and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not [w for w in workers if _alive(w)], "DataLoader workers outlived the killed trainer"
    end = checkpoint.step_of(checkpoint.read_latest(run_dir)) + 2
    rerun = run_cli([sys.executable, "-m", "pretrain", "train", "--config", str(config), "--train.train_steps",
                     str(end)], env=env)  # same port, at once
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == list(range(1, end + 1)), steps
    history = [json.loads(x) for x in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert history[-1]["changes"] == {"train.train_steps": [400, end]}
