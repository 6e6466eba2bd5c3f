"""Queue groups: members leaving with unacked messages, durable groups kept as shadow."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import QUIET, Collector, channel_info, hold_for

#: Ack wait of the queue members (s): long, so a prompt redelivery is not a timeout.
LONG_ACK_WAIT = 30


@pytest.mark.parametrize("how", ["close", "unsubscribe", "connection close"])
async def test_member_leaving_hands_its_unacked_messages_to_the_others(
    start_node: NodeStarter, clients: Clients, how: str
) -> None:
    node = start_node()
    holder_conn = await clients.connect("holder")
    worker_conn = await clients.connect("worker")
    holder = Collector("holder")  # never acks
    worker = Collector("worker")  # acks everything
    holder_sub = await holder_conn.subscribe(
        "jobs", holder.on_msg, queue="pool", manual_acks=True, ack_wait=LONG_ACK_WAIT
    )
    await worker_conn.subscribe("jobs", worker.on_msg, queue="pool", ack_wait=LONG_ACK_WAIT)

    futures = [await worker_conn.publish_async("jobs", f"job{i}".encode()) for i in range(1, 9)]
    await asyncio.gather(*futures)
    await wait_for(
        lambda: len(holder.msgs) + len(worker.msgs) == 8,
        5,
        "8 jobs shared by the two members",
        state=lambda: (holder.seqs(), worker.seqs()),
    )
    held = holder.seqs()
    assert held, "the holder got some jobs"
    assert not set(held) & set(worker.seqs())

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if how == "close":
        await holder_sub.close()
    elif how == "unsubscribe":
        await holder_sub.unsubscribe()
    else:
        await holder_conn.close()
    for seq in held:
        await worker.wait_seq(seq, redelivered=True, timeout=3)
    took = loop.time() - t0
    assert took < 2.0, f"held jobs redelivered after {took:.2f}s (ack wait {LONG_ACK_WAIT}s)"

    assert sorted(worker.seqs()) == list(range(1, 9))
    assert sorted(m.sequence for m in worker.redeliveries()) == held
    await hold_for(lambda: len(worker.msgs) == 8, QUIET, "each held job redelivered once")
    subs = (await channel_info(node, "jobs"))["subscriptions"]
    assert [(s["client_id"], s["pending_count"]) for s in subs] == [("worker", 0)]

    # The group goes on from where it was.
    await worker_conn.publish("jobs", b"job9")
    await worker.wait_seq(9)


async def test_last_member_of_a_plain_group_takes_the_group_with_it(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    sc = await clients.connect("q-plain")
    first = Collector("first member")
    sub = await sc.subscribe("tasks", first.on_msg, queue="grp", manual_acks=True, start_at="first")
    for i in range(1, 4):
        await sc.publish("tasks", f"t{i}".encode())
    await first.wait_count(3)
    await first.ack(1)
    await sub.close()
    assert (await channel_info(node, "tasks"))["subs_count"] == 0

    # A new group of the same name starts from its own start position.
    second = Collector("new group")
    await sc.subscribe("tasks", second.on_msg, queue="grp", start_at="first")
    await second.wait_count(3)
    assert [(m.sequence, m.redelivered) for m in second.msgs] == [
        (1, False),
        (2, False),
        (3, False),
    ]


@pytest.mark.parametrize("how", ["close", "connection close"])
async def test_durable_group_is_kept_as_a_shadow_and_resumed(
    start_node: NodeStarter, clients: Clients, store: str, how: str
) -> None:
    node = start_node(store=store)
    one = await clients.connect("member-one")
    two = await clients.connect("member-two")
    got = Collector("member one")
    sub = await one.subscribe(
        "orders",
        got.on_msg,
        queue="grp",
        durable_name="dur",
        manual_acks=True,
        ack_wait=LONG_ACK_WAIT,
        start_at="first",
    )
    for i in range(1, 5):
        await two.publish("orders", f"o{i}".encode())
    await got.wait_count(4)
    await got.ack(1, 2)
    if how == "close":
        await sub.close()
    else:
        await one.close()

    subs = (await channel_info(node, "orders"))["subscriptions"]
    assert len(subs) == 1
    shadow = subs[0]
    assert (shadow["queue_name"], shadow["is_durable"], shadow["is_offline"]) == (
        "dur:grp",
        True,
        True,
    )
    assert shadow["client_id"] == ""
    assert (shadow["last_sent"], shadow["pending_count"]) == (4, 2)

    await two.publish("orders", b"o5")
    resumed = Collector("member two")
    # A new member takes the shadow over; its start position is ignored.
    await two.subscribe("orders", resumed.on_msg, queue="grp", durable_name="dur", start_at="first")
    await resumed.wait_count(3)
    await hold_for(lambda: len(resumed.msgs) == 3, QUIET, "nothing beyond 3, 4 and 5")
    assert [(m.sequence, m.redelivered) for m in resumed.msgs] == [(3, True), (4, True), (5, False)]
    subs = (await channel_info(node, "orders"))["subscriptions"]
    assert [(s["client_id"], s["is_offline"], s["queue_name"]) for s in subs] == [
        ("member-two", False, "dur:grp")
    ]


async def test_unsubscribing_the_last_durable_member_deletes_the_group(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    sc = await clients.connect("dq-unsub")
    got = Collector()
    sub = await sc.subscribe(
        "events", got.on_msg, queue="grp", durable_name="dur", start_at="first"
    )
    for i in range(1, 3):
        await sc.publish("events", f"e{i}".encode())
    await got.wait_count(2)
    await sub.unsubscribe()
    assert (await channel_info(node, "events"))["subs_count"] == 0

    again = Collector("new group")
    await sc.subscribe("events", again.on_msg, queue="grp", durable_name="dur", start_at="first")
    await again.wait_count(2)
    assert again.seqs() == [1, 2]
