"""Connecting: client ID rules, the connect response, duplicate client IDs, protocol 0."""

from __future__ import annotations

import asyncio

import pytest

from client import StanError
from protocol.messages import ConnectRequest, ConnectResponse, PubMsg
from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    CLIENT_ID_REGISTERED,
    CLIENT_REPLACED,
    INVALID_CLIENT_ID,
    INVALID_CONN_REQ,
    INVALID_PUB_REQ,
    Collector,
    HeartbeatInbox,
    Wire,
    client_ids,
    monitor,
    new_id,
    parse,
    ping_error,
    sub_request,
)

BAD_CLIENT_IDS = [
    "",
    " ",
    "has space",
    " lead",
    "trail ",
    "dot.ted",
    "slash/ed",
    "star*",
    "gt>",
    "colon:",
    "naïve",
    "日本語",
    "emoji\U0001f600",
    "ＡＢＣ",  # full-width letters: alphanumeric to Unicode, not to the rule
    "١٢٣",  # Arabic-Indic digits
    "trailing\n",
    "\nleading",
    "tab\t",
    "nul\x00",
]

GOOD_CLIENT_IDS = ["a", "Z", "0", "-", "_", "A-b_9", "x" * 200]


async def test_invalid_client_ids_get_the_exact_text(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    wire = await clients.wire()
    wrong: dict[str, str] = {}
    for client_id in BAD_CLIENT_IDS:
        resp, _hb, _ = await wire.connect(client_id)
        if resp.error != INVALID_CLIENT_ID or resp.pubPrefix:
            wrong[client_id] = resp.error or f"accepted (pubPrefix={resp.pubPrefix!r})"
    assert not wrong, f"client IDs not refused with the exact text: {wrong}"
    assert await client_ids(node) == set()

    # The client library surfaces the same text.
    with pytest.raises(StanError) as info:
        await clients.connect("bad id")
    assert str(info.value) == INVALID_CLIENT_ID

    for client_id in GOOD_CLIENT_IDS:
        resp, _hb, _ = await wire.connect(client_id)
        assert resp.error == "", (client_id, resp.error)
    assert await client_ids(node) == set(GOOD_CLIENT_IDS)


async def test_empty_heartbeat_inbox_is_an_invalid_connection_request(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    wire = await clients.wire()
    for client_id in ["good", "bad id", ""]:
        # The heartbeat inbox is checked before the client ID.
        req = ConnectRequest(clientID=client_id, protocol=1, connID=b"c1", pingInterval=5)
        resp = parse(
            ConnectResponse, await wire.ask(wire.subjects.discover, req.SerializeToString())
        )
        assert resp.error == INVALID_CONN_REQ, client_id
        assert resp.pubPrefix == resp.subRequests == resp.closeRequests == ""
    assert await client_ids(node) == set()


async def test_connect_response_fields_protocol_1(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    cluster_id = clients.cluster_id
    wire = await clients.wire()
    resp, _hb, _ = await wire.connect("p1", protocol=1, ping_interval=7, ping_max_out=9)
    assert resp.error == ""
    assert resp.pubPrefix == f"_STAN.pub.{cluster_id}"
    assert resp.subRequests == f"_STAN.sub.{cluster_id}"
    assert resp.unsubRequests == f"_STAN.unsub.{cluster_id}"
    assert resp.closeRequests == f"_STAN.close.{cluster_id}"
    assert resp.subCloseRequests == f"_STAN.subclose.{cluster_id}"
    assert resp.pingRequests == f"_STAN.discover.{cluster_id}.pings"
    assert (resp.pingInterval, resp.pingMaxOut) == (7, 9), "ping fields are echoed unchanged"
    assert resp.protocol == 1
    assert resp.publicKey == ""

    # A zero ping interval is echoed as zero (client pings disabled).
    resp0, _hb, _ = await wire.connect("p1-nopings", protocol=1, ping_interval=0, ping_max_out=3)
    assert resp0.error == ""
    assert (resp0.pingInterval, resp0.pingMaxOut) == (0, 3)


async def test_connect_response_protocol_0_has_no_ping_fields(
    start_node: NodeStarter, clients: Clients
) -> None:
    start_node()
    cluster_id = clients.cluster_id
    wire = await clients.wire()
    hb = await HeartbeatInbox(wire.nc).start()
    # Ping values without protocol >= 1 must not be echoed.
    req = ConnectRequest(clientID="p0", heartbeatInbox=hb.subject, pingInterval=5, pingMaxOut=3)
    resp = parse(ConnectResponse, await wire.ask(wire.subjects.discover, req.SerializeToString()))
    assert resp.error == ""
    assert resp.pubPrefix == f"_STAN.pub.{cluster_id}"
    assert resp.subCloseRequests == f"_STAN.subclose.{cluster_id}"
    assert resp.pingRequests == ""
    assert (resp.pingInterval, resp.pingMaxOut) == (0, 0)
    assert resp.protocol == 1


async def test_protocol_0_client_works(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("legacy", protocol=0)
    assert sc.ping_requests == "" and sc.protocol == 1
    got = Collector()
    sub = await sc.subscribe("legacy.ch", got.on_msg, start_at="first")
    for i in range(5):
        await sc.publish("legacy.ch", f"m{i}".encode())
    await got.wait_count(5)
    assert got.datas() == [f"m{i}".encode() for i in range(5)]
    assert got.seqs() == [1, 2, 3, 4, 5]

    # Protocol 0 publishers are known by client ID (no connID in the PubMsg).
    wire = await clients.wire()
    ack = await wire.publish(PubMsg(clientID="legacy", guid="g-legacy", subject="legacy.ch"))
    assert (ack.guid, ack.error) == ("g-legacy", "")
    await got.wait_count(6)

    await sub.unsubscribe()
    await sc.close()
    assert "legacy" not in await client_ids(node)


async def test_duplicate_client_id_while_the_first_is_alive(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    first = await clients.connect("dup")
    with pytest.raises(StanError) as info:
        await clients.connect("dup")
    assert str(info.value) == CLIENT_ID_REGISTERED

    # The first connection is untouched.
    await first.publish("dup.ch", b"still here")
    info_json = await monitor(node, "/streaming/clientsz?client=dup")
    assert info_json["hb_inbox"] == first.heartbeat_inbox
    assert ping_error(await (await clients.wire()).ping(first.conn_id)) == ""


@pytest.mark.parametrize("how", ["silent", "gone"])
async def test_duplicate_client_id_of_a_dead_client_replaces_it(
    start_node: NodeStarter, clients: Clients, how: str
) -> None:
    """The old registration does not answer the probe on its heartbeat inbox.

    ``silent``: its inbox is still subscribed but nothing answers (the probe times out
    after 500 ms); ``gone``: its NATS connection is closed (no responders, at once).
    """
    node = start_node()
    old_nc = await clients.nats()
    old = Wire(old_nc, clients.cluster_id)
    resp, hb, old_conn_id = await old.connect("zombie", ping_interval=5, ping_max_out=3)
    assert resp.error == ""
    # A durable of the old connection, resumable by the new one.
    sub = await old.subscribe(sub_request("zombie", "z.ch", durable="dur", start_position=4))
    assert sub.error == ""

    if how == "silent":
        hb.answering = False
    else:
        await old_nc.close()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    new = await clients.connect("zombie", ping_interval=5)
    elapsed = loop.time() - t0
    if how == "silent":
        assert 0.4 <= elapsed < 1.5, f"replaced after {elapsed:.3f}s, expected about 0.5s"
    else:
        assert elapsed < 1.0, f"replaced after {elapsed:.3f}s"

    info = await monitor(node, "/streaming/clientsz?client=zombie&subs=1")
    assert info["hb_inbox"] == new.heartbeat_inbox
    assert info["subs_count"] == 0, "the old client's subscriptions were closed"
    ch = await monitor(node, "/streaming/channelsz?channel=z.ch&subs=1")
    assert [(s["durable_name"], s["is_offline"]) for s in ch["subscriptions"]] == [("dur", True)]

    wire = await clients.wire()
    # The old connID is no longer registered: pings and publishes fail.
    assert ping_error(await wire.ping(old_conn_id)) == CLIENT_REPLACED
    ack = await wire.publish(
        PubMsg(clientID="zombie", connID=old_conn_id, guid="old-g", subject="z.ch")
    )
    assert (ack.guid, ack.error) == ("old-g", INVALID_PUB_REQ)
    # The new one works and can resume the old one's durable.
    assert ping_error(await wire.ping(new.conn_id)) == ""
    await new.publish("z.ch", b"after")
    got = Collector()
    await new.subscribe("z.ch", got.on_msg, durable_name="dur")
    await got.wait_count(1)
    assert got.datas() == [b"after"]


async def test_concurrent_connects_for_one_id_while_probing(
    start_node: NodeStarter, clients: Clients
) -> None:
    """While the probe of a silent old client runs, another connect for the same ID
    is refused at once; the one that started the probe replaces the old client."""
    node = start_node()
    old = await clients.wire()
    resp, hb, _ = await old.connect("contested")
    assert resp.error == ""
    hb.answering = False

    wire = await clients.wire()
    hb_a = await HeartbeatInbox(wire.nc).start()
    hb_b = await HeartbeatInbox(wire.nc).start()
    first = asyncio.ensure_future(wire.connect("contested", hb=hb_a))
    # The first connect reached the server: its probe of the old client is running.
    await wait_for(lambda: hb.requests >= 1, 2, "the duplicate probe on the old heartbeat inbox")
    resp_b, _hb, _ = await wire.connect("contested", hb=hb_b)
    assert not first.done(), "the second connect was answered while the probe still ran"
    assert resp_b.error == CLIENT_ID_REGISTERED
    resp_a, _hb, _ = await first
    assert resp_a.error == ""
    info = await monitor(node, "/streaming/clientsz?client=contested")
    assert info["hb_inbox"] == hb_a.subject


async def test_many_clients_connect_at_once(start_node: NodeStarter, clients: Clients) -> None:
    node = start_node()
    ids = [new_id("c") for _ in range(20)]
    conns = await asyncio.gather(*(clients.connect(cid) for cid in ids))
    assert await client_ids(node) == set(ids)
    await asyncio.gather(*(sc.close() for sc in conns))
    assert await client_ids(node) == set()
