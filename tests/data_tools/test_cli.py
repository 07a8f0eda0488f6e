"""The command line as a user meets it: help, the demo chain on the real dump, one-line errors."""

from __future__ import annotations

import bz2
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["extract-wiki", "extract-owt", "train-tokenizer", "build", "merge", "inspect", "verify", "demo"]


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "data_tools", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


def test_help_lists_every_command():
    out = cli("--help")
    assert out.returncode == 0
    for cmd in COMMANDS:
        assert cmd in out.stdout
    assert "example" in cli("build", "--help").stdout


def test_demo_chain_on_the_embedded_dump(tmp_path, wiki_extract):
    """extract-wiki -> train-tokenizer -> build --shards 2 -> verify -> inspect, as `make demo` runs it."""
    out = cli("demo", "-o", tmp_path, "--vocab-size", "3000", "-q", "--workers", "2")
    assert out.returncode == 0, out.stderr
    # extract-wiki with 2 workers wrote exactly what 1 worker writes
    assert (tmp_path / "wiki.jsonl").read_bytes() == wiki_extract[0].read_bytes()
    assert "[5/5] inspect" in out.stdout and "checksums ok" in out.stdout and "anarchism" in out.stdout
    verify = cli("verify", tmp_path / "corpus" / "wiki")
    assert verify.returncode == 0 and verify.stdout.count("ok ") == 2


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: ["verify", _write(t / "x.idx", b"NOTMAGIC" * 8).with_suffix("")], "x.idx: not a Megatron MMIDIDX"),
        (lambda t: ["extract-wiki", _write(t / "d.xml.bz2", bz2.compress(b"<mediawiki>" + b"x" * 5000)[:40]), "-o",
                    t / "o.jsonl"], "d.xml.bz2: truncated"),
        (lambda t: ["build", _write(t / "b.jsonl", b'{"text": "ok"}\n{oops}\n'), "--tokenizer", t / "b.jsonl",
                    "-o", t / "c"], "b.jsonl: unknown tokenizer file|b.jsonl: not a valid"),
        (lambda t: ["train-tokenizer", _write(t / "e.jsonl", b"\n"), "-o", t / "tok"], "e.jsonl: no documents found"),
        (lambda t: ["inspect", t / "nothing"], "no corpus found"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, make_args, message):
    out = cli(*make_args(tmp_path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, out.stderr
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "c.idx").exists()
