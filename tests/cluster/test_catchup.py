"""A restarted node and a wiped node catch up to exactly what the others hold.

Follower 1 is stopped while traffic goes on, then started again on its data;
follower 2 is stopped, its ``--dir`` (store and Raft journal) deleted, and started
empty. Both must end up with the same channels, messages, clients, subscriptions
and pending sets as the leader: compared live through ``/streaming/channelsz``
and ``clientsz``, then on disk, store by store, once every node is stopped.
"""

from __future__ import annotations

from tests.helpers import wait_for
from tests.helpers.cluster import StanCluster, compare_stores
from tests.helpers.traffic import Collector


async def test_restarted_and_wiped_followers_catch_up(cluster: StanCluster) -> None:
    leader = await cluster.wait_single_leader()
    restarted, wiped = [nid for nid in cluster.node_ids if nid != leader]
    pub = await cluster.connect("publisher")
    reader = await cluster.connect("reader")

    durable = Collector()
    await reader.subscribe("orders", durable, durable_name="audit", start_at="first")
    held = Collector(ack=False)
    await reader.subscribe("orders", held, queue="workers", manual_acks=True, ack_wait=60)
    for i in range(1, 101):
        await pub.publish("orders", f"order-{i}".encode())
    for i in range(1, 21):
        await pub.publish("events", f"event-{i}".encode())
    await wait_for(lambda: len(durable.msgs) == 100, 10, "the durable to get 1-100")

    # Follower 1 misses some traffic, then comes back on its own data.
    await cluster.stop_node(restarted)
    for i in range(101, 201):
        await pub.publish("orders", f"order-{i}".encode())
    late = await cluster.connect("late-joiner")
    await late.subscribe("events", Collector(), durable_name="late", start_at="first")
    for i in range(21, 41):
        await pub.publish("events", f"event-{i}".encode())
    cluster.restart(restarted)
    await cluster.wait_caught_up(restarted, leader)

    # Follower 2 loses everything and starts from nothing.
    await cluster.stop_node(wiped)
    cluster.wipe(wiped)
    for i in range(201, 251):
        await pub.publish("orders", f"order-{i}".encode())
    await reader.subscribe("audit-log", Collector(), durable_name="audit", start_at="first")
    cluster.restart(wiped)
    await cluster.wait_caught_up(wiped, leader)
    await pub.publish("audit-log", b"caught up")

    await wait_for(lambda: len(durable.msgs) == 250, 10, "the durable to get 1-250")
    # The queue member acks half of what it holds; the rest stays pending.
    for msg in held.msgs[::2]:
        await msg.ack()
    assert await cluster.wait_single_leader() == leader
    state = await cluster.wait_same_live_state()
    orders = state["channels"]["orders"]
    assert (orders["first_seq"], orders["last_seq"], orders["msgs"]) == (1, 250, 250), orders
    assert state["channels"]["events"]["last_seq"] == 40
    assert set(state["clients"]) == {"publisher", "reader", "late-joiner"}
    pending = {
        s["queue_name"] or s["durable_name"]: s["pending_count"] for s in orders["subscriptions"]
    }
    assert pending == {"audit": 0, "workers": 125}, pending

    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    stored = content["channels"]["orders"]["msgs"]
    assert [seq for seq, _, _ in stored] == list(range(1, 251))
    assert set(content["channels"]) == {"orders", "events", "audit-log"}
