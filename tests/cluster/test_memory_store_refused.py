"""Clustering needs a persistent store: with ``-st MEMORY`` a node refuses to start,
with the reference's error text, before touching NATS or the network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, free_port
from tests.helpers.procs import child_env

CLUSTERING_MEMORY = "stan: clustering mode not supported with MEMORY store type"


def test_clustered_memory_store_is_refused(tmp_path: Path) -> None:
    peers = ",".join(f"{nid}=127.0.0.1:{free_port()}" for nid in ("a", "b", "c"))
    cmd = [
        sys.executable,
        "-m",
        "cluster.cli",
        "-cid",
        "memory-cluster",
        "-st",
        "MEMORY",
        # Nothing listens here: the node must give up before trying to connect.
        "-ns",
        f"nats://127.0.0.1:{free_port()}",
        "--dir",
        str(tmp_path / "data"),
        "--clustered",
        "--cluster_node_id",
        "a",
        "--cluster_peers",
        peers,
    ]
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"a clustered MEMORY node started:\n{output}"
    assert CLUSTERING_MEMORY in output, output
    assert not (tmp_path / "data").exists(), "the refused node created its data directory"
