"""Failover under load: SIGKILL the leader while a client publishes, three times over.

The client does not reconnect: it keeps its connection (pings answered by the new
leader), retries the publishes that failed during the election, and in the end a
deliver-all reader finds every acknowledged message, in order, with no gap. A
durable subscriber that stays subscribed throughout gets every acknowledged
message at least once, and all three stores end up identical.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from client import StanConnection
from protocol.messages import MsgProto, decode
from tests.helpers import wait_for
from tests.helpers.cluster import ROLE_FOLLOWER, StanCluster, compare_stores
from tests.helpers.traffic import (
    Collector,
    SyncPublisher,
    check_channel_content,
    probe_publish,
    read_channel,
    wait_ping_ok,
)

ROUNDS = 3
#: Acknowledged messages between two kills.
MSGS_PER_ROUND = 150
#: Seconds the publisher waits for an ack before retrying (the election makes it
#: time out); the probes measure the unavailability more finely.
PUB_ACK_WAIT = 1.0


async def test_leader_killed_three_times_under_load(
    cluster: StanCluster, report_figure: Callable[..., Any]
) -> None:
    leader = await cluster.wait_single_leader()
    lost: list[Exception] = []

    def on_lost(_sc: StanConnection, err: Exception) -> None:
        lost.append(err)

    sc = await cluster.connect("loader", pub_ack_wait=PUB_ACK_WAIT, conn_lost_cb=on_lost)
    # A durable subscriber stays on the channel through every failover.
    tail_sc = await cluster.connect("tail", conn_lost_cb=on_lost)
    tail = Collector()
    await tail_sc.subscribe("load", tail, durable_name="tail", start_at="first", ack_wait=2)
    pub = SyncPublisher(sc, "load")
    # Kill -> first ack: of a probe sent every 20 ms, and of the retrying publisher.
    probe_s: list[float] = []
    sync_s: list[float] = []
    killed: list[str] = []
    async with pub:
        for rnd in range(1, ROUNDS + 1):
            await pub.wait_acked(len(pub.acked) + MSGS_PER_ROUND, 30, f"round {rnd}")
            t_kill = cluster.kill(leader)
            killed.append(leader)
            new_leader, t_probe = await asyncio.gather(
                cluster.wait_single_leader(exclude=[leader]),
                probe_publish(sc, "probe", f"round{rnd}"),
            )
            probe_s.append(t_probe - t_kill)
            first_ack = await pub.wait_ack_after(
                t_kill, 30, f"round {rnd}: a publish acknowledged after the kill of {leader}"
            )
            sync_s.append(first_ack - t_kill)
            assert not lost, f"round {rnd}: the client lost its connection: {lost}"
            assert not sc.closed
            await wait_ping_ok(sc)

            cluster.restart(leader)
            await cluster.wait_caught_up(leader, new_leader)
            await cluster.wait_role(leader, ROLE_FOLLOWER)
            leader = new_leader
        # Publishing goes on normally with all three nodes back.
        await pub.wait_acked(len(pub.acked) + 50, 30, "publishing after the last round")
    report_figure(
        "failover_under_load",
        killed=killed,
        kill_to_first_probe_ack_s=[round(x, 3) for x in probe_s],
        median_kill_to_first_probe_ack_s=round(statistics.median(probe_s), 3),
        kill_to_first_sync_ack_s=[round(x, 3) for x in sync_s],
        sync_pub_ack_wait_s=PUB_ACK_WAIT,
    )

    assert not lost, f"the client lost its connection: {lost}"
    assert not pub.unexpected_failures(), pub.unexpected_failures()
    leader = await cluster.wait_single_leader()
    state = await cluster.wait_same_live_state()
    channel = state["channels"]["load"]
    assert channel["first_seq"] == 1
    assert channel["last_seq"] == channel["msgs"] >= len(pub.acked)

    # The live durable got every acknowledged message (some maybe twice: at least once).
    await wait_for(
        lambda: {m.data for m in tail.msgs} >= set(pub.acked),
        20,
        "the durable that stayed subscribed to have every acknowledged message",
        state=lambda: f"{len(set(pub.acked) - {m.data for m in tail.msgs})} missing",
    )
    tail_dups = len(tail.msgs) - len({m.sequence for m in tail.msgs})

    t0 = time.monotonic()
    msgs = await read_channel(sc, "load", channel["last_seq"])
    read_s = time.monotonic() - t0
    check_channel_content(msgs, pub.acked, pub.attempts, "after three failovers")
    assert len(msgs) == channel["last_seq"]

    # Every node, restarted or not, holds the same on disk.
    await cluster.stop_all()
    content = compare_stores({nid: cluster.data_dir(nid) for nid in cluster.node_ids})
    on_disk = [decode(MsgProto, raw) for _, _, raw in content["channels"]["load"]["msgs"]]
    assert [(p.sequence, p.data) for p in on_disk if p is not None] == [
        (m.sequence, m.data) for m in msgs
    ], "the stores differ from what the reader got"

    report_figure(
        "failover_under_load_content",
        acked=len(pub.acked),
        stored=len(msgs),
        retried_payloads=sum(1 for n in pub.attempts.values() if n > 1),
        failed_attempts=len(pub.failures),
        durable_received=len(tail.msgs),
        durable_duplicates=tail_dups,
        read_back_s=round(read_s, 3),
    )
