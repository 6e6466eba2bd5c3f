"""A leader cut off by SIGSTOP is replaced; when it comes back it steps down and
catches up, and no client holds an acknowledgement the cluster did not keep.

Each round: a burst of publishes goes to the leader and the leader is stopped in
the middle of it; a second burst follows (it sits in the stopped node's socket);
a new leader is elected among the two others and takes publishes (which the
stopped node's socket also buffers, as it is still subscribed as far as NATS
knows); then the old leader gets SIGCONT, must report Follower, and catch up.

Checked at the end, on every node's monitoring, through a deliver-all reader and
on every node's store once stopped: each acknowledged publish is stored, in
order of acknowledgement; a publish that failed is stored at most once, in
publish order; nothing was published once and stored twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client import StanConnection
from tests.helpers import wait_for
from tests.helpers.cluster import ROLE_FOLLOWER, StanCluster, compare_stores
from tests.helpers.traffic import (
    ELECTION_ERRORS,
    SyncPublisher,
    check_channel_content,
    read_channel,
    wait_ping_ok,
)

CHANNEL = "events"
ROUNDS = 3
PUB_ACK_WAIT = 2.0
#: Async publishes sent before the SIGSTOP (which comes once the first acks are
#: back, so that the stop lands in the middle of them), and after it.
BURST_BEFORE = 1000
BURST_AFTER = 100
#: Synchronous, then async publishes through the new leader while the old one is stopped.
SYNC_DURING = 30
BURST_DURING = 300


@dataclass
class Ledger:
    """Every payload published, and what the client was told about each."""

    #: payload -> "" (acknowledged) or the error text; absent while unsettled.
    outcome: dict[bytes, str] = field(default_factory=dict)
    #: Payloads in publish order.
    published: list[bytes] = field(default_factory=list)
    #: Acknowledged payloads in an order acknowledgements are known to follow.
    acked_in_order: list[bytes] = field(default_factory=list)

    async def burst(self, sc: StanConnection, prefix: str, count: int) -> list[bytes]:
        """Publish without waiting for the acks (see :meth:`settle`)."""
        payloads = [f"{prefix}-{i:04d}".encode() for i in range(count)]
        for payload in payloads:

            def on_ack(_guid: str, error: str, p: bytes = payload) -> None:
                self.outcome[p] = error

            await sc.publish_async(CHANNEL, payload, on_ack)
        self.published += payloads
        return payloads

    async def wait_some_acked(self, payloads: list[bytes], count: int, what: str) -> None:
        def enough() -> bool:
            return sum(self.outcome.get(p) == "" for p in payloads) >= count

        await wait_for(enough, 10, what)

    async def settle(self, payloads: list[bytes]) -> None:
        """Wait for every ack or failure, then record the acked ones in order."""
        await wait_for(
            lambda: all(p in self.outcome for p in payloads),
            PUB_ACK_WAIT + 15,
            "every publish of a burst to be acknowledged or to fail",
            state=lambda: f"{sum(p in self.outcome for p in payloads)} of {len(payloads)}",
        )
        self.acked_in_order += [p for p in payloads if self.outcome[p] == ""]

    def add_sync(self, pub: SyncPublisher) -> None:
        self.published += list(pub.attempts)
        self.acked_in_order += pub.acked
        for payload in pub.acked:
            self.outcome[payload] = ""

    def odd_failures(self) -> dict[bytes, str]:
        return {p: e for p, e in self.outcome.items() if e and e not in ELECTION_ERRORS}


async def test_stopped_leader_replaced_then_steps_down(
    cluster: StanCluster, report_figure: Callable[..., Any]
) -> None:
    leader = await cluster.wait_single_leader()
    lost: list[Exception] = []
    sc = await cluster.connect(
        "partitioned", pub_ack_wait=PUB_ACK_WAIT, conn_lost_cb=lambda _sc, err: lost.append(err)
    )
    ledger = Ledger()
    attempts: dict[bytes, int] = {}
    leaders = [leader]

    async with SyncPublisher(sc, CHANNEL, prefix="before") as before:
        await before.wait_acked(30, 30, "publishing before any stop")
    ledger.add_sync(before)
    attempts.update(before.attempts)

    for rnd in range(1, ROUNDS + 1):
        old = leader
        pre = await ledger.burst(sc, f"r{rnd}-pre-stop", BURST_BEFORE)
        await ledger.wait_some_acked(pre, 20, f"round {rnd}: the first acks of the burst")
        cluster.pause(old)
        post = await ledger.burst(sc, f"r{rnd}-post-stop", BURST_AFTER)

        leader = await cluster.wait_single_leader(exclude=[old])
        leaders.append(leader)
        async with SyncPublisher(sc, CHANNEL, prefix=f"r{rnd}-during-") as during:
            await during.wait_acked(SYNC_DURING, 30, f"round {rnd}: publishing, {old} stopped")
        await ledger.settle(pre + post)
        ledger.add_sync(during)
        attempts.update(during.attempts)
        during_burst = await ledger.burst(sc, f"r{rnd}-during-burst", BURST_DURING)
        await ledger.settle(during_burst)
        unacked = [p for p in during_burst if ledger.outcome[p] != ""]
        assert not unacked, (
            f"round {rnd}: {len(unacked)} publishes failed with {leader} serving: "
            f"{sorted({ledger.outcome[p] for p in unacked})}"
        )
        await wait_ping_ok(sc)

        cluster.resume(old)
        await cluster.wait_role(old, ROLE_FOLLOWER)
        assert await cluster.wait_single_leader() == leader, f"round {rnd}"
        await cluster.wait_caught_up(old, leader)

    async with SyncPublisher(sc, CHANNEL, prefix="after") as after:
        await after.wait_acked(20, 30, "publishing once every old leader is back")
    ledger.add_sync(after)
    attempts.update(after.attempts)
    for p in ledger.published:
        attempts.setdefault(p, 1)

    assert not lost, f"the client lost its connection: {lost}"
    assert not ledger.odd_failures(), f"unexpected publish errors: {ledger.odd_failures()}"
    state = await cluster.wait_same_live_state()
    last_seq = state["channels"][CHANNEL]["last_seq"]
    msgs = await read_channel(sc, CHANNEL, last_seq)
    stored = [m.data for m in msgs]
    check_channel_content(msgs, ledger.acked_in_order, attempts, "after the partitions")
    # Failed publishes that were stored all the same keep their publish order.
    rank = {p: i for i, p in enumerate(ledger.published)}
    bursts = [p for p in stored if attempts[p] == 1]
    late = [(a, b) for a, b in zip(bursts, bursts[1:], strict=False) if rank[a] > rank[b]]
    assert not late, f"stored out of publish order (first pairs): {late[:5]}"

    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    assert [seq for seq, _, _ in content["channels"][CHANNEL]["msgs"]] == list(
        range(1, last_seq + 1)
    )
    failed = {p for p, e in ledger.outcome.items() if e}
    report_figure(
        "partition",
        leaders=leaders,
        published=len(ledger.published),
        acked=len(ledger.acked_in_order),
        failed=len(failed),
        failed_but_stored=len(failed & set(stored)),
        stored=len(stored),
    )
