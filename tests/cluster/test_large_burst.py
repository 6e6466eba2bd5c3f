"""A burst of publishes with sizeable payloads is absorbed without a change of leader.

20 MB in 2000 asynchronous publishes of 10 KB is an ordinary burst for a STAN
client (it allows 16384 unacknowledged publishes by default). The leader groups
them into replicated entries; neither building nor shipping those entries may
starve the Raft heartbeats long enough for the followers to elect someone else.
"""

from __future__ import annotations

import asyncio

from tests.helpers.cluster import StanCluster, compare_stores

COUNT = 2000
SIZE = 10_000


async def test_burst_of_10kb_messages_keeps_the_leader(cluster: StanCluster) -> None:
    leader = await cluster.wait_single_leader()
    term = (await cluster.status(leader)).term
    sc = await cluster.connect("burst", pub_ack_wait=30.0)
    payload = b"p" * SIZE
    acks = [await sc.publish_async("bulk", payload) for _ in range(COUNT)]
    results = await asyncio.gather(*acks, return_exceptions=True)
    errors = sorted({str(r) for r in results if isinstance(r, BaseException)})
    after = await cluster.statuses()
    roles = {nid: (st.role, st.term) for nid, st in after.items()}
    assert not errors, f"{sum(isinstance(r, BaseException) for r in results)} failed: {errors}"
    assert roles[leader] == ("Leader", term), (
        f"leadership changed during the burst: was {leader} in term {term}, now {roles}"
    )

    state = await cluster.wait_same_live_state()
    assert state["channels"]["bulk"]["msgs"] == COUNT
    await cluster.stop_all()
    compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
