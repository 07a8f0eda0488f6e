"""A build killed with SIGKILL leaves no corpus that verify accepts; a rerun gives the same bytes as a clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from process_kit import sigkill_when

from data_tools.build import build
from data_tools.errors import UserError
from data_tools.verify import verify

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def big_docs(tmp_path_factory, wiki_docs):
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    path.write_bytes(wiki_docs.read_bytes() * 2)  # ~200 real articles, ~1.3M tokens
    return path


@pytest.mark.slow
def test_sigkill_mid_build_then_rerun(tmp_path, big_docs, wordpiece_dir):
    out = tmp_path / "corpus" / "wiki"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_tools", "build", str(big_docs), "--tokenizer", str(wordpiece_dir), "-o",
         str(out), "--shards", "2", "--workers", "2", "-q"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )

    def writing_tokens() -> bool:  # tokens are being written to the temporary shards
        temps = list(out.parent.glob(".wiki_0000*.bin.*.tmp")) if out.parent.exists() else []
        return any(t.stat().st_size > 1 << 16 for t in temps if t.exists())

    sigkill_when(proc, writing_tokens, timeout=60)
    assert not list(out.parent.glob("*.idx"))
    with pytest.raises(UserError):
        verify(out)
    build([big_docs], wordpiece_dir, out, shards=2, workers=2, progress=False)  # rerun over the debris
    assert not list(out.parent.glob(".*.tmp")), "stale temporary files of the killed run were not cleaned"
    assert [r["checksums"] for r in verify(out)] == ["ok", "ok"]
    clean = tmp_path / "clean" / "wiki"
    build([big_docs], wordpiece_dir, clean, shards=2, workers=1, progress=False)
    for k in range(2):
        for ext in ("bin", "idx", "meta.json"):
            a = Path(f"{out}_{k:05d}.{ext}").read_bytes()
            assert a == Path(f"{clean}_{k:05d}.{ext}").read_bytes(), f"shard {k} .{ext} differs"


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it just ended
        return b""


@pytest.mark.slow
def test_a_killed_worker_stops_the_build_with_one_line(tmp_path, big_docs, wordpiece_dir):
    """As the out-of-memory killer would: one worker dies mid-build. The build must stop with one line and
    leave no corpus, not wait forever for the batch the worker held (multiprocessing.Pool did)."""
    out = tmp_path / "corpus" / "wiki"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "data_tools", "build", str(big_docs), "--tokenizer", str(wordpiece_dir), "-o",
         str(out), "--workers", "2", "-q"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 60
        workers: list[str] = []
        while time.time() < deadline and not workers:
            assert proc.poll() is None, "build ended before a worker could be killed: make the input larger"
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            workers = [c for c in children if _cmdline(c) == own]  # forked workers, not a helper process
            time.sleep(0.05)
        assert workers, "no worker process appeared"
        os.kill(int(workers[0]), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("error: a worker process died"), err
    assert not list(out.parent.glob("*.idx")) and not list(out.parent.glob(".*.tmp"))
