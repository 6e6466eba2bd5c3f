"""A five-node cluster: new entries go at once to the two most caught-up followers
(a majority with the leader) and later to the other two. Kill the leader and then
a follower while a client publishes: every acknowledged message is read back in
order, and the three survivors' stores (and the restarted nodes') end up identical.
"""

from __future__ import annotations

from client import StanConnection
from tests.helpers import StanNodeFactory
from tests.helpers.cluster import StanCluster, compare_stores
from tests.helpers.traffic import SyncPublisher, check_channel_content, read_channel

#: Acknowledged messages between two kills.
MSGS_PER_STEP = 100
PUB_ACK_WAIT = 1.0


async def test_five_nodes_lose_two_and_keep_every_acked_message(
    stan_node: StanNodeFactory,
) -> None:
    cluster = StanCluster(stan_node, node_ids=("a", "b", "c", "d", "e")).start()
    lost: list[Exception] = []

    def on_lost(_sc: StanConnection, err: Exception) -> None:
        lost.append(err)

    try:
        leader = await cluster.wait_single_leader()
        sc = await cluster.connect("loader", pub_ack_wait=PUB_ACK_WAIT, conn_lost_cb=on_lost)
        pub = SyncPublisher(sc, "five")
        async with pub:
            await pub.wait_acked(MSGS_PER_STEP, 60, "publishing on five nodes")
            cluster.kill(leader)
            leader = await cluster.wait_single_leader(exclude=[leader])
            await pub.wait_acked(len(pub.acked) + MSGS_PER_STEP, 60, "after the leader's kill")
            follower = next(n for n in cluster.running_ids() if n != leader)
            cluster.kill(follower)
            # Three of five remain: still a majority.
            await pub.wait_acked(len(pub.acked) + MSGS_PER_STEP, 60, "after a follower's kill")
        assert not lost, f"the client lost its connection: {lost}"
        assert not pub.unexpected_failures(), pub.unexpected_failures()

        state = await cluster.wait_same_live_state()
        last = state["channels"]["five"]["last_seq"]
        msgs = await read_channel(sc, "five", last)
        check_channel_content(msgs, pub.acked, pub.attempts, "on five nodes after two kills")

        # The two killed nodes come back and catch up.
        for nid in [n for n in cluster.node_ids if n not in cluster.running_ids()]:
            cluster.restart(nid)
        for nid in cluster.node_ids:
            if nid != leader:
                await cluster.wait_caught_up(nid, leader, timeout=60)
        await cluster.stop_all()
        content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
        assert len(content["channels"]["five"]["msgs"]) == last
    finally:
        await cluster.close_clients()
