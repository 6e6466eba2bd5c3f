"""``stanchion import-filestore`` into a three-node cluster.

The import goes through replicated commands: every node ends up with the same
store, byte for byte in messages. A leader killed in the middle of an import
does not stop it: the importer waits for the new leader, resumes the channel
from the last sequence the cluster has, and nothing is stored twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ManagedProcess, wait_for
from tests.helpers.cluster import ROLE_FOLLOWER, StanCluster, compare_stores
from tests.helpers.filestore_writer import FileStoreWriter
from tests.helpers.import_cli import IMPORT_TIMEOUT, import_command, import_ok
from tests.helpers.reference_fixture import FIXTURE


@pytest.fixture
def cluster_id() -> str:
    """The stores imported here belong to ``test-cluster``."""
    return "test-cluster"


@pytest.fixture
def reference_store() -> Path:
    path = FIXTURE / "store"
    if not (path / "server.dat").is_file():
        pytest.fail(f"the reference store fixture is missing: {path}")
    return path


async def test_every_node_gets_the_import(
    cluster: StanCluster, nats_server: Any, reference_store: Path
) -> None:
    await cluster.wait_single_leader()
    await import_ok(reference_store, "-ns", nats_server.url)
    state = await cluster.wait_same_live_state()
    assert {
        n: (c["msgs"], c["first_seq"], c["last_seq"]) for n, c in state["channels"].items()
    } == {
        "orders": (200, 1, 200),
        "events": (50, 1, 50),
        "tiny": (1, 1, 1),
    }
    assert state["clients"] == {"orders-worker": "_INBOX.3MI22RGREE7E532T1JW203"}
    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    orders = content["channels"]["orders"]
    assert [m[0] for m in orders["msgs"]] == list(range(1, 201))
    assert orders["subs"][1]["durable_name"] == "orders-durable"
    assert orders["pending"][1][:5] == [121, 122, 123, 124, 125]
    events = content["channels"]["events"]
    assert events["subs"][1]["qgroup"] == "events-durable:workers"
    assert events["pending"][1] == [48, 49, 50]


async def test_leader_killed_during_import(
    cluster: StanCluster, nats_server: Any, tmp_path: Path
) -> None:
    total = 120_000
    root = tmp_path / "big-store"
    w = FileStoreWriter(root)
    w.server()
    w.clients([])
    with w.channel("bulk", slice_max_msgs=25_000) as ch:
        for seq in range(1, total + 1):
            ch.append(seq, b"%08d" % seq + b"x" * 120, 1_790_000_000_000_000_000 + seq)

    leader = await cluster.wait_single_leader()
    proc = ManagedProcess("import", tmp_path / "import.log")
    try:
        proc._spawn(
            import_command(
                root,
                "-ns",
                nats_server.url,
                "--batch_msgs",
                "100",
                "--inflight",
                "2",
                "--timeout",
                "3",
                "--progress",
                "lines",
            )
        )

        async def stored_on_leader() -> int:
            data = await cluster.monitor(leader, "/streaming/channelsz?subs=1")
            return sum(c["msgs"] for c in data.get("channels", []))

        await wait_for(
            lambda: _at_least(stored_on_leader, 10_000),
            30,
            "the import to be under way on the leader",
            ignore=(OSError,),
        )
        cluster.kill(leader)
        new_leader = await cluster.wait_single_leader(exclude=[leader])
        rc = await asyncio.to_thread(proc.wait_exit, IMPORT_TIMEOUT)
        assert rc == 0, f"import exited {rc}:\n{proc.log_text()}"
    finally:
        proc.stop()

    cluster.restart(leader)
    await cluster.wait_caught_up(leader, new_leader)
    await cluster.wait_role(leader, ROLE_FOLLOWER)
    state = await cluster.wait_same_live_state()
    bulk = state["channels"]["bulk"]
    assert (bulk["msgs"], bulk["first_seq"], bulk["last_seq"]) == (total, 1, total)
    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    msgs = content["channels"]["bulk"]["msgs"]
    assert [m[0] for m in msgs] == list(range(1, total + 1))
    assert all(m[1] == 1_790_000_000_000_000_000 + m[0] for m in msgs)


async def _at_least(probe: Any, n: int) -> bool:
    return bool(await probe() >= n)
