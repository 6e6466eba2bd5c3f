"""Publishing: PubAck after storage, validation of the PubMsg, channel creation limits."""

from __future__ import annotations

import asyncio
import time

import pytest

from client import StanError
from protocol.messages import MsgProto, PubMsg
from tests.helpers import wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    INVALID_PUB_REQ,
    TOO_MANY_CHANNELS,
    Collector,
    Inbox,
    case_conflict,
    channel_info,
    monitor,
    parse,
    sub_request,
)

INVALID_CHANNELS = [
    "",
    "*",
    ">",
    "foo.*",
    "foo.>",
    "*.foo",
    "foo.*.bar",
    "fo*o",
    "fo>o",
    "foo..bar",
    "..",
    ".",
    ".foo",
    "foo.",
    "a/b",
]
VALID_CHANNELS = ["a", "a.b.c", "with-dash_and_underscore", "Ünï.cödé", "x" * 200]


async def test_pub_ack_comes_after_the_message_is_stored(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("pub")
    before = time.time_ns()
    for i in range(1, 11):
        guid = await sc.publish("stored", f"sync-{i}".encode())
        assert guid
        # The PubAck is out: the message must be in the store already.
        info = await channel_info(node, "stored")
        assert (info["last_seq"], info["msgs"]) == (i, i), f"after the PubAck of message {i}"

    acked: list[str] = []
    errors: list[str] = []

    def on_ack(guid: str, error: str) -> None:
        (errors if error else acked).append(error or guid)

    guids = [await sc.publish_async("stored", f"async-{i}".encode(), on_ack) for i in range(200)]
    await wait_for(lambda: len(acked) + len(errors) == 200, 10, "200 async PubAcks")
    assert not errors
    assert sorted(acked) == sorted(guids)
    info = await channel_info(node, "stored")
    assert (info["first_seq"], info["last_seq"], info["msgs"]) == (1, 210, 210)

    got = Collector()
    await sc.subscribe("stored", got.on_msg, start_at="first")
    await got.wait_count(210)
    after = time.time_ns()
    assert got.seqs() == list(range(1, 211))
    assert got.datas() == [f"sync-{i}".encode() for i in range(1, 11)] + [
        f"async-{i}".encode() for i in range(200)
    ]
    stamps = [m.timestamp for m in got.msgs]
    assert stamps == sorted(stamps), "timestamps are non-decreasing within a channel"
    assert before <= stamps[0] and stamps[-1] <= after
    assert all(m.subject == "stored" and not m.redelivered for m in got.msgs)


async def test_delivery_is_a_plain_msgproto_with_the_publish_reply(
    start_node: NodeStarter, clients: Clients
) -> None:
    """The PubMsg's ``reply`` is copied into the MsgProto, the NATS delivery has no reply
    subject, and a PubMsg sent without a NATS reply subject is still stored."""
    node = start_node()
    wire = await clients.wire()
    resp, _hb, conn_id = await wire.connect("raw-pub")
    assert resp.error == ""
    deliveries = await Inbox(wire.nc).start()
    sub = await wire.subscribe(sub_request("raw-pub", "plain", deliveries.subject))
    assert sub.error == ""

    msg = PubMsg(
        clientID="raw-pub",
        connID=conn_id,
        guid="g1",
        subject="plain",
        reply="answer.here",
        data=b"\x00\x01payload\xff",
    )
    ack = await wire.publish(msg)
    assert (ack.guid, ack.error) == ("g1", "")
    # No NATS reply subject: nobody gets a PubAck, the message is stored all the same.
    msg.guid = "g2"
    msg.reply = ""
    await wire.send(f"{wire.subjects.pub_prefix}.plain", msg.SerializeToString())
    await wait_for(
        lambda: len(deliveries.msgs) >= 2, 5, "both deliveries", state=lambda: deliveries.msgs
    )

    first, second = deliveries.msgs[:2]
    assert first.reply == "" and second.reply == "", "deliveries carry no NATS reply subject"
    m1 = parse(MsgProto, first.data)
    m2 = parse(MsgProto, second.data)
    assert (m1.sequence, m1.subject, m1.reply, m1.data) == (
        1,
        "plain",
        "answer.here",
        b"\x00\x01payload\xff",
    )
    assert (m1.redelivered, m1.redeliveryCount, m1.CRC32) == (False, 0, 0)
    assert (m2.sequence, m2.reply) == (2, "")
    assert m1.timestamp > 0 and m2.timestamp >= m1.timestamp
    assert (await channel_info(node, "plain"))["msgs"] == 2


async def test_invalid_channel_names_and_empty_guid(
    start_node: NodeStarter, clients: Clients
) -> None:
    node = start_node()
    wire = await clients.wire()
    resp, _hb, conn_id = await wire.connect("namer")
    assert resp.error == ""

    wrong: dict[str, tuple[str, str]] = {}
    for i, name in enumerate(INVALID_CHANNELS):
        guid = f"bad-{i}"
        ack = await wire.publish(PubMsg(clientID="namer", connID=conn_id, guid=guid, subject=name))
        if (ack.guid, ack.error) != (guid, INVALID_PUB_REQ):
            wrong[name] = (ack.guid, ack.error)
    assert not wrong, f"invalid channel names not refused as the spec says: {wrong}"

    for i, name in enumerate(VALID_CHANNELS):
        ack = await wire.publish(
            PubMsg(clientID="namer", connID=conn_id, guid=f"ok-{i}", subject=name)
        )
        assert (ack.guid, ack.error) == (f"ok-{i}", ""), name

    # An empty GUID is refused even on a valid channel.
    ack = await wire.publish(PubMsg(clientID="namer", connID=conn_id, guid="", subject="a"))
    assert (ack.guid, ack.error) == ("", INVALID_PUB_REQ)

    names = (await monitor(node, "/streaming/channelsz"))["names"]
    assert sorted(names) == sorted(VALID_CHANNELS)
    assert (await channel_info(node, "a"))["msgs"] == 1


async def test_unknown_publisher_is_refused(start_node: NodeStarter, clients: Clients) -> None:
    """The publisher is the connID when the PubMsg carries one, else the client ID."""
    node = start_node()
    wire = await clients.wire()
    resp, _hb, conn_id = await wire.connect("known")
    assert resp.error == ""
    resp0, _hb0, _ = await wire.connect("legacy", protocol=0)
    assert resp0.error == ""

    cases = [
        ("unknown client ID", PubMsg(clientID="nobody"), INVALID_PUB_REQ),
        (
            "unknown connID, known client ID",
            PubMsg(clientID="known", connID=b"nope"),
            INVALID_PUB_REQ,
        ),
        ("no client at all", PubMsg(), INVALID_PUB_REQ),
        ("known connID, client ID ignored", PubMsg(clientID="nobody", connID=conn_id), ""),
        ("known connID, no client ID", PubMsg(connID=conn_id), ""),
        ("protocol 0 client by client ID", PubMsg(clientID="legacy"), ""),
    ]
    for i, (what, msg, expected) in enumerate(cases):
        msg.guid = f"g{i}"
        msg.subject = "who"
        ack = await wire.publish(msg)
        assert (ack.guid, ack.error) == (msg.guid, expected), what
    assert (await channel_info(node, "who"))["msgs"] == 3

    # Once closed, the connection's publishes are refused.
    assert (await wire.close("known")).error == ""
    ack = await wire.publish(PubMsg(clientID="known", connID=conn_id, guid="late", subject="who"))
    assert (ack.guid, ack.error) == ("late", INVALID_PUB_REQ)
    assert (await channel_info(node, "who"))["msgs"] == 3


async def test_channel_names_differing_only_by_case(
    start_node: NodeStarter, clients: Clients, store: str
) -> None:
    node = start_node(store=store)
    sc = await clients.connect("caser")
    await sc.publish("Orders.EU", b"1")
    with pytest.raises(StanError) as info:
        await sc.publish("orders.eu", b"2")
    assert str(info.value) == case_conflict("orders.eu", "Orders.EU")

    wire = await clients.wire()
    resp = await wire.subscribe(sub_request("caser", "ORDERS.eu"))
    assert resp.error == case_conflict("ORDERS.eu", "Orders.EU")
    assert resp.ackInbox == ""

    await sc.publish("Orders.EU", b"3")
    info_json = await channel_info(node, "Orders.EU")
    assert (info_json["msgs"], info_json["last_seq"]) == (2, 2)
    assert (await monitor(node, "/streaming/channelsz"))["names"] == ["Orders.EU"]


async def test_too_many_channels(start_node: NodeStarter, clients: Clients, store: str) -> None:
    node = start_node("-mc", "2", store=store)
    sc = await clients.connect("limited")
    await sc.publish("one", b"1")
    await sc.publish("two", b"1")
    with pytest.raises(StanError) as info:
        await sc.publish("three", b"1")
    assert str(info.value) == TOO_MANY_CHANNELS

    wire = await clients.wire()
    resp = await wire.subscribe(sub_request("limited", "four"))
    assert resp.error == TOO_MANY_CHANNELS

    # Existing channels keep working, and the refused message took no sequence.
    results = await asyncio.gather(
        sc.publish("one", b"2"), sc.publish("three", b"x"), return_exceptions=True
    )
    assert isinstance(results[0], str)
    assert isinstance(results[1], StanError) and str(results[1]) == TOO_MANY_CHANNELS
    assert (await channel_info(node, "one"))["last_seq"] == 2
    assert sorted((await monitor(node, "/streaming/channelsz"))["names"]) == ["one", "two"]
