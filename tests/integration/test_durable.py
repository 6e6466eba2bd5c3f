"""Durable subscriptions: close keeps them, unsubscribe deletes them."""

from __future__ import annotations

from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import QUIET, Collector, channel_info, hold_for


async def test_closed_durable_resumes_with_its_pending_messages_first(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("dur-owner")
    got = Collector("before close")
    sub = await sc.subscribe(
        "ledger", got.on_msg, durable_name="audit", manual_acks=True, ack_wait=30, start_at="first"
    )
    for i in range(1, 6):
        await sc.publish("ledger", f"m{i}".encode())
    await got.wait_count(5)
    await got.ack(1, 2, 3)
    await sub.close()

    subs = (await channel_info(node, "ledger"))["subscriptions"]
    assert len(subs) == 1
    offline = subs[0]
    assert (offline["durable_name"], offline["is_durable"], offline["is_offline"]) == (
        "audit",
        True,
        True,
    )
    assert (offline["last_sent"], offline["pending_count"]) == (5, 2)

    await sc.publish("ledger", b"m6")
    await sc.publish("ledger", b"m7")
    resumed = Collector("resumed")
    # The start position is ignored on resume; the new settings are taken.
    await sc.subscribe(
        "ledger", resumed.on_msg, durable_name="audit", start_at="first", max_inflight=50
    )
    await resumed.wait_count(4)
    await hold_for(lambda: len(resumed.msgs) == 4, QUIET, "nothing beyond 4, 5, 6, 7")
    assert [(m.sequence, m.redelivered) for m in resumed.msgs] == [
        (4, True),
        (5, True),
        (6, False),
        (7, False),
    ]
    online = (await channel_info(node, "ledger"))["subscriptions"][0]
    assert (online["is_offline"], online["max_inflight"], online["last_sent"]) == (False, 50, 7)
    assert online["ack_inbox"] != offline["ack_inbox"], "a resumed durable gets a new ack inbox"


async def test_unsubscribed_durable_starts_afresh(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("dur-unsub")
    for i in range(1, 4):
        await sc.publish("tape", f"m{i}".encode())

    got = Collector("first life")
    sub = await sc.subscribe("tape", got.on_msg, durable_name="reader", start_at="first")
    await got.wait_count(3)
    await sub.unsubscribe()
    assert (await channel_info(node, "tape"))["subs_count"] == 0

    # Same name again: a new durable, positioned by its own start position.
    again = Collector("second life, from the first")
    sub = await sc.subscribe("tape", again.on_msg, durable_name="reader", start_at="first")
    await again.wait_count(3)
    assert [(m.sequence, m.redelivered) for m in again.msgs] == [(1, False), (2, False), (3, False)]
    await sub.unsubscribe()

    fresh = Collector("third life, new only")
    await sc.subscribe("tape", fresh.on_msg, durable_name="reader")
    await hold_for(lambda: not fresh.msgs, QUIET, "nothing old for a new-only durable")
    await sc.publish("tape", b"m4")
    await fresh.wait_count(1)
    assert fresh.seqs() == [4]


async def test_closed_durable_keeps_its_position_across_close_and_start_position(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Close vs unsubscribe side by side: after close the durable continues where it
    was, whatever start position the new request asks for."""
    start_node()
    sc = await clients.connect("dur-close")
    got = Collector()
    sub = await sc.subscribe("feed", got.on_msg, durable_name="pos", start_at="first")
    for i in range(1, 4):
        await sc.publish("feed", f"m{i}".encode())
    await got.wait_count(3)
    await sub.close()
    resumed = Collector("resumed")
    await sc.subscribe("feed", resumed.on_msg, durable_name="pos", start_at="first")
    await hold_for(lambda: not resumed.msgs, QUIET, "no replay of acked messages")
    await sc.publish("feed", b"m4")
    await resumed.wait_count(1)
    assert resumed.seqs() == [4]
