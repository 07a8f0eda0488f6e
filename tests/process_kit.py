"""Killing a job at a chosen moment, and a disk that fills: the two hostile conditions several test files need."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, poll: float = 0.02) -> None:
    """Wait until ``ready()``, then SIGKILL ``proc``'s whole process group (it must run in a session of its own).

    Fails the test when the job ended by itself first: it was then never killed mid-way and the test would
    prove nothing ("make the input larger")."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and not ready():
            assert proc.poll() is None, f"job ended before it could be killed: {proc.stderr.read()}"
            time.sleep(poll)
        assert proc.poll() is None, "job finished before the kill: make the input larger"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def small_tmpfs(parent: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. "64k") mounted at ``parent/full`` for the block, unmounted afterwards;
    the test is skipped where mounting needs rights it lacks."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = parent / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
