"""Durable and queue subscriptions carry on through a leader failover.

Before the kill: a live durable and a two-member queue group hold messages 1-10
with 1-5 acknowledged; an offline durable consumed 1-10 and was closed. The test
waits until every node shows that state (delivery progress is replicated lazily),
then SIGKILLs the leader. Afterwards, without any client reconnecting:

* 6-10 are redelivered with the redelivered flag, to the durable and, for the
  queue group, to the member that held each one; 1-5 never come back;
* new messages reach both as first deliveries;
* the offline durable, reopened on the new leader, resumes at 11.
"""

from __future__ import annotations

from client import Msg
from tests.helpers import wait_for
from tests.helpers.cluster import StanCluster
from tests.helpers.traffic import Collector, wait_ping_ok

CHANNEL = "orders"
#: Seconds; long enough that the old leader does not redeliver before the kill.
ACK_WAIT = 4


class QueueMember(Collector):
    def __init__(self, name: str) -> None:
        super().__init__(ack=False)
        self.name = name


async def test_durable_and_queue_resume_on_new_leader(cluster: StanCluster) -> None:
    leader = await cluster.wait_single_leader()
    pub = await cluster.connect("publisher")
    worker = await cluster.connect("worker")
    worker2 = await cluster.connect("worker2")

    live = Collector(ack=False)
    await worker.subscribe(
        CHANNEL, live, durable_name="live", start_at="first", manual_acks=True, ack_wait=ACK_WAIT
    )
    offline = Collector()
    offline_sub = await worker.subscribe(CHANNEL, offline, durable_name="offline", start_at="first")
    q1, q2 = QueueMember("q1"), QueueMember("q2")
    await worker.subscribe(CHANNEL, q1, queue="workers", manual_acks=True, ack_wait=ACK_WAIT)
    await worker2.subscribe(CHANNEL, q2, queue="workers", manual_acks=True, ack_wait=ACK_WAIT)

    for i in range(1, 11):
        await pub.publish(CHANNEL, f"msg-{i}".encode())
    await wait_for(lambda: live.seqs() == list(range(1, 11)), 10, "live: 1-10", state=live.describe)
    await wait_for(lambda: len(offline.msgs) == 10, 10, "offline: 1-10", state=offline.describe)
    await wait_for(
        lambda: sorted(q1.seqs() + q2.seqs()) == list(range(1, 11)),
        10,
        "the queue group: 1-10 between its members",
        state=lambda: (q1.describe(), q2.describe()),
    )
    holder = {m.sequence: member.name for member in (q1, q2) for m in member.msgs}
    for msg in live.msgs[:5]:
        await msg.ack()
    for member in (q1, q2):
        for msg in member.msgs:
            if msg.sequence <= 5:
                await msg.ack()
    await offline_sub.close()

    # Every node must know the deliveries and acks before the leader goes.
    state = await cluster.wait_same_live_state()
    subs = {
        (s["durable_name"] or s["queue_name"], s["client_id"]): s
        for s in state["channels"][CHANNEL]["subscriptions"]
    }
    assert subs[("live", "worker")]["pending_count"] == 5, subs
    assert subs[("live", "worker")]["last_sent"] == 10, subs
    assert subs[("offline", "worker")]["is_offline"], subs
    assert subs[("offline", "worker")]["pending_count"] == 0, subs
    assert (
        subs[("workers", "worker")]["pending_count"] + subs[("workers", "worker2")]["pending_count"]
        == 5
    ), subs

    seen = {id(m) for c in (live, q1, q2) for m in c.msgs}
    cluster.kill(leader)
    new_leader = await cluster.wait_single_leader(exclude=[leader])
    # From here on, everything received is acked.
    for c in (live, q1, q2):
        c.ack = True
        for msg in c.msgs:
            if id(msg) not in seen:  # arrived between the state check and the kill
                await msg.ack()

    def after_kill(c: Collector) -> list[Msg]:
        return [m for m in c.msgs if id(m) not in seen]

    await wait_for(
        lambda: {m.sequence for m in after_kill(live) if m.redelivered} >= set(range(6, 11)),
        ACK_WAIT + 15,
        "the live durable to get 6-10 redelivered by the new leader",
        state=live.describe,
    )
    await wait_for(
        lambda: (
            {m.sequence for c in (q1, q2) for m in after_kill(c) if m.redelivered}
            >= set(range(6, 11))
        ),
        ACK_WAIT + 15,
        "the queue group to get 6-10 redelivered by the new leader",
        state=lambda: (q1.describe(), q2.describe()),
    )
    for c in (live, q1, q2):
        redelivered = [m.sequence for m in after_kill(c) if m.redelivered]
        assert all(6 <= s <= 10 for s in redelivered), f"acked messages came back: {c.describe()}"
    # Clustered, the reference redelivers a queue message only to the member that
    # holds it (server.go, performAckExpirationRedelivery: "In cluster mode we will
    # always redeliver to the same queue member"). Checked at the end, so that the
    # rest of the scenario is exercised whatever the outcome.
    moved = [
        f"{m.sequence} (held by {holder[m.sequence]}) redelivered to {member.name}"
        for member in (q1, q2)
        for m in after_kill(member)
        if m.redelivered and holder[m.sequence] != member.name
    ]

    for i in range(11, 16):
        await pub.publish(CHANNEL, f"msg-{i}".encode())
    await wait_for(
        lambda: [m.sequence for m in after_kill(live) if not m.redelivered] == list(range(11, 16)),
        10,
        "the live durable to get 11-15 as first deliveries",
        state=live.describe,
    )
    await wait_for(
        lambda: (
            sorted(m.sequence for c in (q1, q2) for m in after_kill(c) if not m.redelivered)
            == list(range(11, 16))
        ),
        10,
        "the queue group to get 11-15 as first deliveries, once each",
        state=lambda: (q1.describe(), q2.describe()),
    )

    reopened = Collector()
    await worker.subscribe(CHANNEL, reopened, durable_name="offline", start_at="first")
    await wait_for(
        lambda: reopened.seqs() == list(range(11, 16)),
        10,
        "the reopened offline durable to resume at 11",
        state=reopened.describe,
    )
    assert not [m for m in reopened.msgs if m.redelivered], reopened.describe()

    for sc in (pub, worker, worker2):
        assert not sc.closed, f"{sc.client_id} lost its connection"
        await wait_ping_ok(sc)
    # Everything acked: all nodes settle on empty pending sets.
    cluster.restart(leader)
    await cluster.wait_caught_up(leader, new_leader)
    state = await cluster.wait_same_live_state()
    assert all(s["pending_count"] == 0 for s in state["channels"][CHANNEL]["subscriptions"]), state
    assert not moved, f"queue redeliveries went to another member: {moved}"
