"""build --executor ray on a real two-node Ray cluster started (and stopped) by the test: the same bytes as
the local process pool, and no Ray process left behind. One module, one cluster: Ray takes seconds to start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from data_tools.build_tasks import build_tasks
from data_tools.indexed import resolve_prefixes

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.multiproc]


def _ray_processes(temp_dir: str) -> list[str]:
    """Processes started for this test's cluster (their command lines name its temp dir), or our children."""
    found = []
    me = psutil.Process()
    children = {c.pid for c in me.children(recursive=True)}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] in children or temp_dir in cmd:
            found.append(f"{p.info['pid']}: {cmd[:200]}")
    return found


def test_ray_cluster_builds_the_same_bytes_as_the_local_pool(tmp_path, monkeypatch, wiki_docs, small_docs,
                                                             wordpiece_dir):
    from ray.cluster_utils import Cluster

    inputs = [wiki_docs, small_docs]
    local = tmp_path / "local" / "c"
    build_tasks(inputs, wordpiece_dir, local, num_tasks=4, workers=2, progress=False)

    # Our own Ray temp dir (sessions, sockets, the "current cluster" file): nothing shared with other users of
    # /tmp/ray, and it names our processes. Short: Ray's unix socket paths are limited to ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    # Everything on 127.0.0.1 (Ray otherwise swaps loopback for the machine's outward IP; see executors.py).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the nodes' workers import data_tools from this tree
    node = {"num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args=dict(node, resources={"head": 1}), shutdown_at_exit=True)
    try:
        cluster.add_node(**node, resources={"second": 1})  # a second raylet: a real two-node cluster
        cluster.wait_for_nodes()
        out = tmp_path / "ray" / "c"
        env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")
        r = subprocess.run(
            [sys.executable, "-m", "data_tools", "build", *map(str, inputs), "--tokenizer", str(wordpiece_dir),
             "-o", str(out), "--tasks", "4", "--executor", "ray", "--address", cluster.address, "-q"],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert "built 4 shard(s)" in r.stdout
        nodes = [n for n in ray_nodes(cluster.address) if n["Alive"]]
        assert len(nodes) == 2
    finally:
        cluster.shutdown()
    for p in resolve_prefixes(local):
        q = str(out) + p[-6:]
        for ext in ("bin", "idx", "meta.json"):
            assert Path(f"{p}.{ext}").read_bytes() == Path(f"{q}.{ext}").read_bytes(), f"{q}.{ext} differs"
    deadline = time.time() + 30
    while _ray_processes(temp_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(temp_dir), "Ray processes left running"
    shutil.rmtree(temp_dir, ignore_errors=True)


def ray_nodes(address: str) -> list[dict]:
    """The cluster's nodes as a separate driver sees them."""
    code = f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); print(json.dumps(ray.nodes()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])
