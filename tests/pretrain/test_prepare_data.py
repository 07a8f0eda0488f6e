"""``python -m pretrain prepare-data`` builds every cached array before training; a 2-rank run then builds
nothing, and without a cache exactly one rank builds while the other waits for it (proved from the ranks'
own lines and the files, not from timing)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest
from engine_kit import VENV_BIN, child_env, free_port, run_cli, tiny_config, write_config

from pretrain.sample_index import index_path


def stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def config(tmp_path: Path, corpus, **data) -> tuple[Path, dict]:
    raw = tiny_config(tmp_path, corpus, data={"cache_dir": str(tmp_path / "cache"), **data},
                      train={"train_steps": 2, "save_interval": 0, "eval_interval": 0})
    return write_config(tmp_path / "run.json", raw), raw


def the_index(raw: dict) -> Path:
    d = raw["data"]
    return index_path(d["prefixes"][0], "bert", d["max_seq_len"], 1234, 0.1, d["cache_dir"])


def torchrun(cfg: Path) -> list[str]:
    return [str(VENV_BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(free_port()),
            "-m", "pretrain", "train", "--config", str(cfg)]


def prepare(*args: str) -> None:
    from data_tools.errors import run_cli as cli
    from pretrain.__main__ import main

    cli(lambda: main(["prepare-data", *args]))


def test_prepare_data_builds_every_index_and_blend_map_once(tmp_path, corpus, capfd):
    prefix, _ = corpus
    cfg, raw = config(tmp_path, corpus, prefixes=[prefix, prefix], weights=[3, 1], eval_prefixes=[prefix])
    prepare("--config", str(cfg), "--workers", "2")
    out, err = capfd.readouterr()
    assert err.count("building the sample index") == 1  # one corpus, one index (shared by all its uses)
    assert err.count("building the blend map") == 1
    files = {p.name for p in (tmp_path / "cache").glob("*.npy")}
    assert the_index(raw).name in files and len(files) == 2
    assert [f for f in files if f.startswith("blend_")]
    assert "2 cached files" in out
    stamps = {p: stamp(p) for p in (tmp_path / "cache").glob("*.npy")}
    prepare("--config", str(cfg))
    assert "building" not in capfd.readouterr().err
    assert {p: stamp(p) for p in stamps} == stamps

    with pytest.raises(SystemExit) as exit_:
        prepare("--config", str(cfg), "--data.prefixes", '["nowhere/x"]', "--data.weights", "null")
    assert exit_.value.code == 2
    assert capfd.readouterr().err.startswith("error: data.prefixes[0]: nowhere/x: no corpus found")


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_ranks_after_prepare_data_build_nothing(tmp_path, corpus):
    cfg, raw = config(tmp_path, corpus)
    prepare("--config", str(cfg))
    index = the_index(raw)
    before = stamp(index)
    proc = run_cli(torchrun(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done at step 2" in proc.stdout
    assert "building" not in proc.stderr and "waiting" not in proc.stderr
    assert stamp(index) == before  # not rewritten
    assert not list(index.parent.glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.multiproc
def test_without_a_cache_one_rank_builds_and_the_other_waits(tmp_path, corpus):
    """Both ranks start while the index's lock is held (as by a slow builder): both report waiting. After the
    release the lock admits one rank at a time, so exactly one builds and the other maps what it built."""
    cfg, raw = config(tmp_path, corpus)
    index = the_index(raw)
    index.parent.mkdir(parents=True)
    fd = os.open(str(index) + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(torchrun(cfg), env=child_env(), stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            while (log := err_path.read_text()).count("waiting for another process that is building it") < 2:
                assert proc.poll() is None, log[-3000:]
                time.sleep(0.1)
        finally:
            os.close(fd)  # release: the ranks go on
        out, _ = proc.communicate(timeout=600)
    log = err_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    assert "done at step 2" in out
    waiting = {r for r in ("0", "1") if f"[rank {r}] {index.name}: waiting for another process" in log}
    built = [r for r in ("0", "1") if f"[rank {r}] {index.name}: building the sample index" in log]
    mapped = [r for r in ("0", "1") if f"[rank {r}] {index.name}: built by another process; mapping it" in log]
    assert waiting == {"0", "1"}, log[-3000:]
    assert len(built) == 1 and len(mapped) == 1 and built != mapped, log[-3000:]
    assert log.count("building the sample index") == 1
