"""A stalled follower does not stall commits: with either follower of three stopped
(SIGSTOP), the leader keeps acknowledging synchronous publishes through the other,
and the stalled one catches up once it runs again. New entries go at once only to
the most caught-up follower, so this covers the case where that one stalls.
"""

from __future__ import annotations

from client import StanConnection
from tests.helpers.cluster import StanCluster, compare_stores
from tests.helpers.traffic import SyncPublisher, check_channel_content, read_channel

MSGS_PER_STEP = 100


async def test_either_follower_may_stall(cluster: StanCluster) -> None:
    leader = await cluster.wait_single_leader()
    lost: list[Exception] = []

    def on_lost(_sc: StanConnection, err: Exception) -> None:
        lost.append(err)

    sc = await cluster.connect("loader", pub_ack_wait=2.0, conn_lost_cb=on_lost)
    pub = SyncPublisher(sc, "stall")
    followers = [n for n in cluster.node_ids if n != leader]
    async with pub:
        await pub.wait_acked(MSGS_PER_STEP, 30, "publishing with all three")
        for nid in followers:
            cluster.pause(nid)
            try:
                await pub.wait_acked(
                    len(pub.acked) + MSGS_PER_STEP, 30, f"publishing while {nid} is stopped"
                )
            finally:
                cluster.resume(nid)
            await cluster.wait_caught_up(nid, leader, timeout=30)
    assert not lost, f"the client lost its connection: {lost}"
    assert not pub.unexpected_failures(), pub.unexpected_failures()
    assert await cluster.wait_single_leader() == leader

    state = await cluster.wait_same_live_state()
    last = state["channels"]["stall"]["last_seq"]
    msgs = await read_channel(sc, "stall", last)
    check_channel_content(msgs, pub.acked, pub.attempts, "with a follower stalled in turn")
    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    assert len(content["channels"]["stall"]["msgs"]) == last
