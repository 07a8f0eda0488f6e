"""Two "nodes": two network namespaces joined by a veth pair, one launcher per node, rendezvous over the
veth addresses (torchrun --nnodes 2, and the deepspeed launcher's multi-node form without ssh).

Both nodes share this machine's filesystem, as nodes share a parallel filesystem in a cluster. Skipped,
with the reason, where namespaces cannot be made (not root / no CAP_NET_ADMIN / no iproute2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engine_kit import VENV_BIN, child_env, metrics, tiny_config, tiny_corpus, write_config

from pretrain import checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]

ADDRS = ("10.231.7.1", "10.231.7.2")


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def nodes():
    """Two namespaces ``<tag>0``/``<tag>1`` with veth ends ``<tag>v0``/``<tag>v1`` at ADDRS."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed")
    tag = f"alm{os.getpid() % 100000}"
    names = [f"{tag}n0", f"{tag}n1"]
    made = []
    try:
        for n in names:
            r = _ip("netns", "add", n)
            if r.returncode:
                pytest.skip(f"cannot create network namespaces (`ip netns add` failed: {r.stderr.strip()})")
            made.append(n)
        steps = [("link", "add", f"{tag}v0", "type", "veth", "peer", "name", f"{tag}v1"),
                 ("link", "set", f"{tag}v0", "netns", names[0]), ("link", "set", f"{tag}v1", "netns", names[1])]
        for i, n in enumerate(names):
            steps += [("-n", n, "addr", "add", f"{ADDRS[i]}/24", "dev", f"{tag}v{i}"),
                      ("-n", n, "link", "set", f"{tag}v{i}", "up"), ("-n", n, "link", "set", "lo", "up")]
        for step in steps:
            r = _ip(*step)
            if r.returncode:
                pytest.skip(f"cannot set up the veth pair (`ip {' '.join(step)}`: {r.stderr.strip()})")
        # Can a process run in node 0 and reach node 1 over the veth? (TCP connect to a closed port is
        # refused, not timed out, when the route works.)
        probe_code = (f"import socket; s = socket.socket(); s.settimeout(5); s.bind(('{ADDRS[0]}', 0)); "
                      f"s.connect_ex(('{ADDRS[1]}', 9)) in (0, 111) or exit(1)")
        probe = subprocess.run(["ip", "netns", "exec", names[0], sys.executable, "-c", probe_code],
                               capture_output=True, text=True, timeout=30)
        if probe.returncode:
            pytest.skip(f"namespaces made but not usable (probe in {names[0]} failed: {probe.stderr.strip()[-200:]})")
        yield [(n, f"{tag}v{i}") for i, n in enumerate(names)]
    finally:
        for n in made:
            _ip("netns", "del", n)


def _node_cmd(launcher: str, node_rank: int, config: Path, port: int, hostfile: Path) -> list[str]:
    entry = ["pretrain", "train", "--config", str(config)]
    if launcher == "torchrun":
        return [str(VENV_BIN / "torchrun"), "--nnodes", "2", "--node_rank", str(node_rank), "--nproc_per_node", "1",
                "--master_addr", ADDRS[0], "--master_port", str(port), "-m", *entry]
    return [str(VENV_BIN / "deepspeed"), "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node_rank),
            "--master_addr", ADDRS[0], "--master_port", str(port), "--module", *entry]


def _train_on_two_nodes(nodes, launcher: str, tmp_path: Path, corpus) -> Path:
    raw = tiny_config(tmp_path, corpus, "zero2_fp32.json",
                      train={"train_steps": 4, "save_interval": 4, "log_sample_ids": True,
                             "output_dir": str(tmp_path / launcher)})
    config = write_config(tmp_path / f"{launcher}.json", raw)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    procs = []
    for rank, (ns, dev) in enumerate(nodes):
        # gloo binds to the address of this interface (otherwise it resolves the hostname, which is lo here).
        env = child_env(GLOO_SOCKET_IFNAME=dev)
        cmd = ["ip", "netns", "exec", ns, *_node_cmd(launcher, rank, config, 29400 + os.getpid() % 500, hostfile)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return tmp_path / launcher


def test_two_nodes_torchrun_and_deepspeed_agree(nodes, tmp_path, tmp_path_factory):
    corpus = tiny_corpus(str(tmp_path_factory.mktemp("corpus")))
    runs = [_train_on_two_nodes(nodes, launcher, tmp_path, corpus) for launcher in ("torchrun", "deepspeed")]
    for run_dir in runs:
        assert checkpoint.read_latest(run_dir) == "step_4"
        ids = [[json.loads(x)["ids"] for x in (run_dir / "sample_ids" / f"rank{r}.jsonl").read_text().splitlines()]
               for r in (0, 1)]
        seen = [{i for step in per_rank for i in step} for per_rank in ids]
        assert len(seen[0]) == len(seen[1]) == 16 and not seen[0] & seen[1]  # one rank on each node
    # Same config, same data order, same math: both launch modes train the same model step for step.
    a, b = (metrics(r) for r in runs)
    assert len(a) == len(b) == 4
    for ra, rb in zip(a, b):
        assert abs(ra["loss"] - rb["loss"]) < 1e-6, (ra, rb)
