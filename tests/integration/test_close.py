"""Closing a connection: the client goes, its subscriptions are closed, its ID is free."""

from __future__ import annotations

import asyncio

from client import StanConnection
from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    CLIENT_REPLACED,
    UNKNOWN_CLIENT,
    Collector,
    channel_info,
    client_ids,
    monitor,
    ping_error,
)


async def test_close_removes_the_client_and_frees_its_id(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("closer")
    other = await clients.connect("bystander")
    got = Collector()
    await sc.subscribe("closing", got.on_msg)
    await sc.subscribe("closing", got.on_msg, durable_name="keep", start_at="first")
    await sc.subscribe("closing", got.on_msg, queue="grp")
    await other.publish("closing", b"m1")
    await got.wait_count(3)
    assert await client_ids(node) == {"closer", "bystander"}

    await sc.close()
    assert await client_ids(node) == {"bystander"}
    subs = (await channel_info(node, "closing"))["subscriptions"]
    assert [(s["client_id"], s["durable_name"], s["is_offline"]) for s in subs] == [
        ("closer", "keep", True)
    ]
    wire = await clients.wire()
    assert ping_error(await wire.ping(sc.conn_id)) == CLIENT_REPLACED

    # The ID is free at once: no duplicate probe, no "already registered".
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    again = await clients.connect("closer")
    assert loop.time() - t0 < 0.4
    resumed = Collector("resumed")
    await other.publish("closing", b"m2")
    await again.subscribe("closing", resumed.on_msg, durable_name="keep")
    await resumed.wait_count(1)
    assert resumed.seqs() == [2]


async def test_close_of_an_unknown_client(start_node: NodeStarter, clients: Clients) -> None:
    node = start_node()
    wire = await clients.wire()
    assert (await wire.close("never-connected")).error == UNKNOWN_CLIENT
    assert (await wire.close("")).error == UNKNOWN_CLIENT
    assert (await wire.connect("once"))[0].error == ""
    assert await wire.ask(wire.subjects.close, b"\x0a\x04once") == b"", "OK is zero-length"
    assert (await wire.close("once")).error == UNKNOWN_CLIENT, "a second close"
    assert await client_ids(node) == set()


async def test_close_by_client_id_ends_the_live_connection(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Close is authorised by client ID only: whoever sends it, the client is gone, and
    the client library learns it from its next PING."""
    node = start_node()
    lost: list[tuple[StanConnection, Exception]] = []
    sc = await clients.connect(
        "victim", ping_interval_ms=100, conn_lost_cb=lambda c, e: lost.append((c, e))
    )
    wire = await clients.wire()
    assert (await wire.close("victim")).error == ""
    await wait_for(lambda: lost, 3, "the connection-lost callback")
    assert [str(e) for _c, e in lost] == [CLIENT_REPLACED]
    assert sc.closed
    assert (await monitor(node, "/streaming/serverz"))["clients"] == 0
