"""Server-to-client heartbeats and client PINGs.

The node runs with ``-hbi 200ms -hbt 200ms -hbf 2``: a heartbeat every 200 ms, 200 ms
to answer, and the client is closed when more than 2 in a row go unanswered. The
client under test is a raw NATS connection, so the test decides when its heartbeat
inbox answers.
"""

from __future__ import annotations

import asyncio

from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    CLIENT_REPLACED,
    FAST_HB,
    QUIET,
    Collector,
    HeartbeatInbox,
    channel_info,
    client_ids,
    hold_for,
    ping_error,
    sub_request,
    wait_until,
)

#: ``-hbf`` of FAST_HB: failures tolerated; one more closes the client.
FAIL_COUNT = 2


async def test_client_that_stops_answering_is_closed(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(*FAST_HB, store=store)
    healthy = await clients.connect("healthy")
    healthy_got = Collector("healthy")
    await healthy.subscribe("hb.ch", healthy_got.on_msg)

    wire = await clients.wire()
    resp, hb, _ = await wire.connect("zombie")
    assert resp.error == ""
    for req in (
        sub_request("zombie", "hb.ch"),
        sub_request("zombie", "hb.ch", durable="dur"),
        sub_request("zombie", "hb.ch", queue="q"),
        sub_request("zombie", "hb.ch", queue="g", durable="dq"),
    ):
        assert (await wire.subscribe(req)).error == ""
    await wait_for(lambda: hb.requests >= 2, 3, "heartbeats to reach the zombie's inbox")
    assert await client_ids(node) == {"healthy", "zombie"}, "answered heartbeats keep a client"
    assert (await channel_info(node, "hb.ch"))["subs_count"] == 5

    hb.answering = False

    async def zombie_gone() -> bool:
        return "zombie" not in await client_ids(node)

    await wait_until(zombie_gone, 5, "the silent client to be closed")
    node.wait_for_log("[Client:zombie] Timed out on heartbeats", timeout=2)
    assert hb.unanswered == FAIL_COUNT + 1, f"closed after {hb.unanswered} unanswered heartbeats"
    requests = hb.requests
    await hold_for(lambda: hb.requests == requests, QUIET, "no heartbeats after the close")

    subs = (await channel_info(node, "hb.ch"))["subscriptions"]
    left = sorted(
        (s["client_id"], s.get("durable_name", ""), s.get("queue_name", ""), s["is_offline"])
        for s in subs
    )
    assert left == [
        ("", "", "dq:g", True),  # the durable group, kept as a shadow
        ("healthy", "", "", False),
        ("zombie", "dur", "", True),  # the durable, kept offline
    ]
    assert await client_ids(node) == {"healthy"}
    await healthy.publish("hb.ch", b"still served")
    await healthy_got.wait_count(1)


async def test_missed_heartbeats_are_forgiven_once_answered(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node(*FAST_HB)
    wire = await clients.wire()
    resp, hb, _ = await wire.connect("flaky")
    assert resp.error == ""
    # Twice FAIL_COUNT missed in a row would close it, but one answer in between
    # resets the count.
    for round_ in range(2):
        hb.skip_next = FAIL_COUNT
        target = hb.requests + FAIL_COUNT + 1
        await wait_for(
            lambda t=target: hb.requests >= t,  # type: ignore[misc]
            5,
            f"round {round_}: {FAIL_COUNT} missed then 1 answered heartbeat",
        )
        assert "flaky" in await client_ids(node)
    assert hb.unanswered == 2 * FAIL_COUNT
    assert "Timed out on heartbeats" not in node.log_text()


async def test_ping_replies(start_node: NodeStarter, clients: Clients) -> None:
    start_node()
    sc = await clients.connect("pinger")
    wire = await clients.wire()
    assert await wire.ping(sc.conn_id) == b"", "OK is a zero-length payload"
    assert ping_error(await wire.ping(b"unknown-conn-id")) == CLIENT_REPLACED
    await wire.ask_unanswered(wire.subjects.pings, b"")  # an empty Ping is ignored

    await sc.close()
    assert ping_error(await wire.ping(sc.conn_id)) == CLIENT_REPLACED


async def test_client_pings_keep_the_client_library_connected(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    lost: list[Exception] = []
    sc = await clients.connect(
        "lively", ping_interval_ms=50, ping_max_out=3, conn_lost_cb=lambda _sc, e: lost.append(e)
    )
    # Twenty ping rounds, all answered.
    await hold_for(lambda: not lost and not sc.closed, 1.0, "the connection staying up")
    await sc.publish("lively", b"ok")


async def test_ping_from_a_client_with_failed_heartbeats_checks_it_at_once(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Heartbeats every second: after one missed heartbeat, a PING from that client
    brings the next heartbeat forward instead of waiting for the interval."""
    start_node("-hbi", "1s", "-hbt", "200ms", "-hbf", "5")
    wire = await clients.wire()
    hb = await HeartbeatInbox(wire.nc).start()
    hb.skip_next = 1
    resp, _hb, conn_id = await wire.connect("recovering", hb=hb, ping_interval=1, ping_max_out=3)
    assert resp.error == ""
    await wait_for(lambda: hb.requests >= 1, 3, "the first heartbeat")
    missed_at = hb.arrivals[0]
    loop = asyncio.get_running_loop()
    # The server counts the failure when its 200 ms timeout ends.
    await wait_for(lambda: loop.time() >= missed_at + 0.35, 1, "the heartbeat timeout to pass")

    assert await wire.ping(conn_id) == b""
    await wait_for(lambda: hb.requests >= 2, 1, "a heartbeat soon after the ping")
    early = hb.arrivals[1] - missed_at
    assert early < 0.8, f"next heartbeat {early:.2f}s after the missed one (interval 1s)"
