"""Unsubscribe and subscription close requests: errors, and the delivery-inbox fallback."""

from __future__ import annotations

import pytest

from protocol.messages import UnsubscribeRequest
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    INVALID_SUB,
    UNKNOWN_CHANNEL,
    UNKNOWN_CLIENT,
    Inbox,
    channel_info,
    sub_request,
    wait_until,
)


@pytest.mark.parametrize("close", [False, True], ids=["unsub", "subclose"])
async def test_unsubscribe_errors(start_node: NodeStarter, clients: Clients, close: bool) -> None:
    node = start_node()
    wire = await clients.wire()
    assert (await wire.connect("owner"))[0].error == ""
    assert (await wire.connect("stranger"))[0].error == ""
    sub = await wire.subscribe(sub_request("owner", "subs"))
    assert sub.error == ""
    ack_inbox = sub.ackInbox

    async def request(client_id: str, channel: str, inbox: str) -> str:
        return (await wire.unsubscribe(client_id, channel, inbox, close=close)).error

    assert await request("owner", "no.such.channel", ack_inbox) == UNKNOWN_CHANNEL
    assert await request("owner", "subs", "_INBOX.not-a-subscription") == INVALID_SUB
    assert await request("owner", "subs", "") == INVALID_SUB
    # The subscription exists, but the requester does not own it.
    assert await request("stranger", "subs", ack_inbox) == UNKNOWN_CLIENT
    assert await request("nobody", "subs", ack_inbox) == UNKNOWN_CLIENT
    assert await request("", "subs", ack_inbox) == UNKNOWN_CLIENT
    assert (await channel_info(node, "subs"))["subs_count"] == 1, "failed requests change nothing"

    assert await request("owner", "subs", ack_inbox) == ""
    assert (await channel_info(node, "subs"))["subs_count"] == 0
    assert await request("owner", "subs", ack_inbox) == INVALID_SUB, "already gone"


@pytest.mark.parametrize("close", [False, True], ids=["unsub", "subclose"])
async def test_lookup_falls_back_to_the_delivery_inbox(
    start_node: NodeStarter, clients: Clients, close: bool
) -> None:
    node = start_node()
    wire = await clients.wire()
    assert (await wire.connect("owner"))[0].error == ""
    deliveries = await Inbox(wire.nc).start()
    plain = await wire.subscribe(sub_request("owner", "fallback", deliveries.subject))
    assert plain.error == ""
    durable_inbox = await Inbox(wire.nc).start()
    durable = await wire.subscribe(
        sub_request("owner", "fallback", durable_inbox.subject, durable="d")
    )
    assert durable.error == ""

    resp = await wire.unsubscribe("owner", "fallback", deliveries.subject, close=close)
    assert resp.error == ""
    resp = await wire.unsubscribe("owner", "fallback", durable_inbox.subject, close=close)
    assert resp.error == ""
    subs = (await channel_info(node, "fallback"))["subscriptions"]
    if close:
        assert [(s["durable_name"], s["is_offline"]) for s in subs] == [("d", True)]
    else:
        assert subs == []


async def test_fire_and_forget_close_by_delivery_inbox(
    start_node: NodeStarter, clients: Clients
) -> None:
    """What a client sends when its subscribe request timed out: a subclose without a
    reply subject naming the delivery inbox. The subscription must go away."""
    node = start_node()
    wire = await clients.wire()
    assert (await wire.connect("timid"))[0].error == ""
    deliveries = await Inbox(wire.nc).start()
    sub = await wire.subscribe(sub_request("timid", "late", deliveries.subject))
    assert sub.error == ""
    assert (await channel_info(node, "late"))["subs_count"] == 1

    req = UnsubscribeRequest(clientID="timid", subject="late", inbox=deliveries.subject)
    await wire.send(wire.subjects.subclose, req.SerializeToString())

    async def gone() -> bool:
        return bool((await channel_info(node, "late"))["subs_count"] == 0)

    await wait_until(gone, 5, "the subscription to be closed by its delivery inbox")
