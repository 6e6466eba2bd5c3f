"""Flow control and redelivery: MaxInFlight, ack wait, the redelivered flag and count."""

from __future__ import annotations

import asyncio

from client import Msg
from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import QUIET, Collector, channel_info, hold_for


class InflightWatch(Collector):
    """Manual-ack collector that records every moment more than ``limit`` messages
    were delivered and not yet acked."""

    def __init__(self, limit: int) -> None:
        super().__init__("inflight")
        self.limit = limit
        self.acked: set[int] = set()
        self.violations: list[tuple[int, list[int]]] = []

    def outstanding(self) -> list[int]:
        return sorted({m.sequence for m in self.msgs} - self.acked)

    async def on_msg(self, msg: Msg) -> None:
        await super().on_msg(msg)
        if len(self.outstanding()) > self.limit:
            self.violations.append((msg.sequence, self.outstanding()))

    async def ack(self, *seqs: int) -> None:
        for seq in seqs:
            self.acked.add(seq)  # counted as acked once the ack is on its way
        await super().ack(*seqs)


async def test_max_inflight_is_respected(start_node: NodeStarter, clients: Clients) -> None:
    node = start_node()
    sc = await clients.connect("slow")
    watch = InflightWatch(limit=3)
    await sc.subscribe("work", watch.on_msg, max_inflight=3, manual_acks=True, ack_wait=30)
    for i in range(1, 11):
        await sc.publish("work", f"job{i}".encode())

    await watch.wait_count(3)
    await hold_for(lambda: len(watch.msgs) == 3, QUIET, "no 4th message before an ack")
    assert watch.seqs() == [1, 2, 3]
    sub_json = (await channel_info(node, "work"))["subscriptions"][0]
    assert (sub_json["pending_count"], sub_json["is_stalled"]) == (3, True)

    await watch.ack(1)
    await watch.wait_count(4)
    await hold_for(lambda: len(watch.msgs) == 4, QUIET, "one ack lets exactly one more in")
    assert watch.seqs() == [1, 2, 3, 4]

    await watch.ack(2, 3)
    await watch.wait_count(6)
    # Ack the rest as they come.
    while len(watch.acked) < 10:
        await wait_for(lambda: watch.outstanding(), 5, "an outstanding message to ack")
        await watch.ack(*watch.outstanding())
    await hold_for(lambda: len(watch.msgs) == 10, QUIET, "nothing beyond the 10 messages")
    assert watch.seqs() == list(range(1, 11))
    assert not watch.redeliveries()
    assert not watch.violations, f"more than 3 unacked at once: {watch.violations}"
    sub_json = (await channel_info(node, "work"))["subscriptions"][0]
    assert (sub_json["pending_count"], sub_json["is_stalled"]) == (0, False)


async def test_ack_wait_redelivery(start_node: NodeStarter, clients: Clients) -> None:
    start_node()
    sc = await clients.connect("forgetful")
    loop = asyncio.get_running_loop()
    times: list[float] = []
    got = Collector("unacked")

    async def on_msg(msg: Msg) -> None:
        times.append(loop.time())
        await got.on_msg(msg)

    await sc.subscribe("redo", on_msg, manual_acks=True, ack_wait=1)
    auto = Collector("auto-acked")
    await sc.subscribe("redo", auto.on_msg, ack_wait=1)
    await sc.publish("redo", b"please ack")

    await got.wait_seq(1, redelivered=False)
    await wait_for(lambda: len(got.msgs) >= 3, 5, "two redeliveries", state=got.msgs.__repr__)
    flags = [(m.sequence, m.redelivered, m.redelivery_count) for m in got.msgs[:3]]
    assert flags == [(1, False, 0), (1, True, 1), (1, True, 2)]
    assert all(m.data == b"please ack" for m in got.msgs)
    gaps = [b - a for a, b in zip(times, times[1:3], strict=False)]
    assert all(0.8 <= g <= 1.6 for g in gaps), f"redeliveries every ack wait (1 s): {gaps}"

    await got.ack(1)
    count = len(got.msgs)
    await hold_for(lambda: len(got.msgs) == count, 1.3, "no redelivery once acked")
    # The automatically acked subscriber got the message once.
    assert [(m.sequence, m.redelivered) for m in auto.msgs] == [(1, False)]


async def test_redelivery_goes_through_while_stalled(
    start_node: NodeStarter, clients: Clients
) -> None:
    """A subscription at MaxInFlight gets redeliveries but no new message."""
    start_node()
    sc = await clients.connect("stalled")
    got = Collector()
    await sc.subscribe("stall", got.on_msg, manual_acks=True, max_inflight=1, ack_wait=1)
    await sc.publish("stall", b"one")
    await sc.publish("stall", b"two")
    await got.wait_seq(1, redelivered=True, timeout=3)
    assert got.seqs() == [1, 1], "sequence 2 must wait for the ack of 1"

    await got.ack(1)
    await got.wait_seq(2, redelivered=False)
    await got.ack(2)
    count = len(got.msgs)
    await hold_for(lambda: len(got.msgs) == count, 1.3, "nothing more once both are acked")


async def test_stale_and_foreign_acks_are_ignored(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    sc = await clients.connect("acker")
    got = Collector()
    sub = await sc.subscribe("acks", got.on_msg, manual_acks=True, ack_wait=1)
    await sc.publish("acks", b"x")
    await got.wait_count(1)
    # Acks for a sequence never sent, for another channel, and a second one of 1
    # after the real ack: none of them may disturb the subscription.
    await sub.send_ack("acks", 42)
    await sub.send_ack("other", 1)
    await got.ack(1)
    await sub.send_ack("acks", 1)
    await sc.publish("acks", b"y")
    await got.wait_seq(2)
    await got.ack(2)
    await hold_for(lambda: not got.redeliveries(), 1.3, "no redelivery of acked messages")
    assert got.seqs() == [1, 2]
