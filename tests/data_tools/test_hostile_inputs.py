"""Hostile inputs and outputs, and a full disk: refused or reported in one line, nothing replaced or leaked,
memory bounded on a decompression bomb."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from process_kit import small_tmpfs

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-m", "data_tools", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def _one_error_line(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def docs_folder(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("The first document has a sentence. And another one.\n")
    (folder / "b.txt").write_text("A second document, also real enough for a test.\n")
    return folder


def _special_outputs(tmp_path) -> list[tuple[Path, str]]:
    out = []
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    out.append((fifo, "is a FIFO"))
    if os.geteuid() == 0:  # a character device like /dev/null, made in the test's own directory
        dev = tmp_path / "null.jsonl"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        out.append((dev, "is a character device"))
    (tmp_path / "dir.jsonl").mkdir()
    out.append((tmp_path / "dir.jsonl", "is a directory"))
    return out


def test_output_that_is_not_a_regular_file_is_refused(tmp_path, docs_folder):
    for node, message in _special_outputs(tmp_path):
        kind = stat.S_IFMT(os.stat(node).st_mode)
        _one_error_line(cli("extract-owt", docs_folder, "-o", node, "-q"), str(node), message)
        assert stat.S_IFMT(os.stat(node).st_mode) == kind  # not replaced by a regular file
    # A corpus whose .idx would land on a FIFO.
    os.mkfifo(tmp_path / "c.idx")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"text": "one sentence here."}) + "\n")
    from data_tools.errors import UserError
    from data_tools.indexed import IndexedCorpusWriter

    with pytest.raises(UserError, match="c.idx: is a FIFO"):
        IndexedCorpusWriter(tmp_path / "c").__enter__()
    assert stat.S_ISFIFO(os.stat(tmp_path / "c.idx").st_mode)


def test_folder_input_does_not_follow_links_out_of_it(tmp_path, docs_folder):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret line that must not reach the corpus\n")
    (docs_folder / "link.txt").symlink_to(secret)
    (docs_folder / "inside.txt").symlink_to(docs_folder / "a.txt")  # a link within the folder is fine
    out = tmp_path / "out.jsonl"
    _one_error_line(cli("extract-owt", docs_folder, "-o", out, "-q"), "link.txt", "outside the input folder")
    assert not out.exists()
    skipped = cli("extract-owt", docs_folder, "-o", out, "-q", "--skip-bad")
    assert skipped.returncode == 0, skipped.stderr
    text = out.read_text()
    assert "secret line" not in text and text.count("\n") == 3


class _Repeat(io.RawIOBase):
    """``size`` bytes of ``a`` without holding them."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = b"a" * k
        self.left -= k
        return k


def _owt_tar(path: Path, big: int) -> Path:
    """An OpenWebText-style tar: one ``.xz`` subset holding a small document and one of ``big`` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", preset=0) as inner:
        ok = b"A normal web page with a few sentences. It is short."
        info = tarfile.TarInfo("0001-ok.txt")
        info.size = len(ok)
        inner.addfile(info, io.BytesIO(ok))
        info = tarfile.TarInfo("0002-big.txt")
        info.size = big
        inner.addfile(info, io.BufferedReader(_Repeat(big)))
    with tarfile.open(path, "w") as outer:
        info = tarfile.TarInfo("openwebtext/urlsf_subset00-1_data.xz")
        info.size = len(buf.getvalue())
        outer.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def _max_rss_mib(args: list) -> tuple[int, float, str]:
    """Run ``python -m data_tools ARGS``; exit code, peak RSS (MiB, from the kernel's rusage of that child), stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen([sys.executable, "-m", "data_tools", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, err


def test_decompression_bomb_keeps_memory_flat(tmp_path):
    from data_tools.sources import MAX_DOC_BYTES

    small = _owt_tar(tmp_path / "small.tar", 1000)
    bomb = _owt_tar(tmp_path / "bomb.tar", MAX_DOC_BYTES + (16 << 20))  # ~12 KB on disk
    assert bomb.stat().st_size < 100_000
    code, base, _ = _max_rss_mib(["extract-owt", small, "-o", tmp_path / "s.jsonl", "-q"])
    assert code == 0
    code, peak, err = _max_rss_mib(["extract-owt", bomb, "-o", tmp_path / "b.jsonl", "-q"])
    assert code == 2 and "0002-big.txt: document larger than --max-doc-bytes" in err and "Traceback" not in err
    # Reading the member whole would add its size (80 MiB) at least; streaming adds next to nothing.
    assert peak < base + 24, (base, peak)
    code, peak, err = _max_rss_mib(["extract-owt", bomb, "-o", tmp_path / "b.jsonl", "-q", "--skip-bad"])
    assert code == 0 and peak < base + 24, (base, peak, err)
    assert [json.loads(x)["text"][:8] for x in (tmp_path / "b.jsonl").read_text().splitlines()] == ["A normal"]


@pytest.mark.parametrize("name", ["d.jsonl", "d.jsonl.xz", "d.txt"])
def test_line_cap_in_jsonl_and_text(tmp_path, name):
    import lzma

    from data_tools.errors import UserError
    from data_tools.sources import BadInputPolicy, read_documents

    long = "word " * 1000
    if ".jsonl" in name:
        data = "".join(json.dumps({"text": t}) + "\n" for t in ("short one", long, "short two")).encode()
    else:
        data = f"short one\n\n{long}\n\nshort two\n".encode()
    path = tmp_path / name
    path.write_bytes(lzma.compress(data) if name.endswith(".xz") else data)
    policy = BadInputPolicy(skip=True, max_doc_bytes=1000)
    assert [d.text for d in read_documents([path], policy=policy)] == ["short one", "short two"]
    assert policy.skipped == 1 and "larger than --max-doc-bytes 1,000" in policy.examples[0]
    with pytest.raises(UserError, match=r":2: document larger than --max-doc-bytes|:3: document larger"):
        list(read_documents([path], policy=BadInputPolicy(max_doc_bytes=1000)))


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only); unmounted afterwards."""
    with small_tmpfs(tmp_path, "64k") as mnt:
        yield mnt


def test_disk_full_is_one_line_and_leaves_nothing(full_disk, tmp_path, wiki_dump, wiki_extract, wordpiece_dir):
    out = full_disk / "new" / "wiki.jsonl"
    _one_error_line(cli("extract-wiki", wiki_dump, "-o", out, "-q"), f"no space left on {full_disk}",
                    "while writing", "wiki.jsonl")
    assert list(full_disk.iterdir()) == []  # no *.tmp, no empty directory
    corpus = tmp_path / "corpus" / "wiki"
    assert cli("build", wiki_extract[0], "--tokenizer", wordpiece_dir, "-o", corpus, "-q").returncode == 0
    _one_error_line(cli("build", wiki_extract[0], "--tokenizer", wordpiece_dir, "-o", full_disk / "c" / "w", "-q"),
                    f"no space left on {full_disk}", "w.bin")
    assert list(full_disk.iterdir()) == []
    _one_error_line(cli("merge", corpus, corpus, "-o", full_disk / "m" / "all", "-q"), f"no space left on {full_disk}")
    assert list(full_disk.iterdir()) == []


def test_rerun_removes_temporary_files_of_a_killed_extract(tmp_path, docs_folder):
    # extract-wiki and extract-owt write through the same _write_jsonl
    out = tmp_path / "wiki.jsonl"
    stale = tmp_path / ".wiki.jsonl.k2j4_x9a.tmp"  # what atomic_path names a partial output
    stale.write_text('{"id": "partial"')
    other = tmp_path / ".other.jsonl.k2j4_x9a.tmp"
    other.write_text("not ours")
    assert cli("extract-owt", docs_folder, "-o", out, "-q").returncode == 0
    assert not stale.exists() and other.exists()
