"""Group commit: publishes that arrive while a commit is under way share the
next Raft entry (and its one fsync) instead of each taking an entry of its own.

A burst of asynchronous publishes to one node (store synced on every commit)
must take far fewer log entries than messages; the entries are counted from
the applied index the store keeps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from client import connect
from store import open_store
from tests.helpers import StanNodeFactory

COUNT = 2000


async def test_a_burst_of_publishes_shares_entries(stan_node: StanNodeFactory) -> None:
    node = stan_node()
    sc = await connect(stan_node.cluster_id, "burst", nats_url=stan_node.nats_url)
    futures = [await sc.publish_async("burst", b"x" * 128) for _ in range(COUNT)]
    await asyncio.gather(*futures)
    await sc.close()
    node.stop()

    store = open_store("LMDB", str(Path(node.args[node.args.index("--dir") + 1]) / "store"))
    try:
        assert store.channels()["burst"].last_seq == COUNT
        entries = store.applied_index()
    finally:
        store.close()
    # Registration, channel creation and close take a few entries; the
    # publishes must have gone in batches (one entry each would be >= COUNT).
    assert entries < COUNT // 4, f"{entries} log entries for {COUNT} publishes"
