"""Malformed input on every subject the node listens on.

Garbage, truncated protobuf, empty payloads and messages of the wrong type go to the
discover, pings, publish, subscribe, unsubscribe, subscription-close and close subjects
and to a subscription's ack inbox, with and without a reply subject. Each one is answered
with the text of PROTOCOL.md §6 or ignored where the spec says so, and afterwards the
node still serves and the messages stored before are intact.

"Wrong type" means what the reference decoder (gogo protobuf, used by stan.go and the
reference server) rejects: a known field number arriving with another wire type. A
message of another type whose fields merely fit is not malformed, so it is not sent here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from client import StanConnection
from protocol.messages import (
    Ack,
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    CtrlMsg,
    MsgProto,
    Ping,
    PingResponse,
    PubAck,
    PubMsg,
    SubscriptionResponse,
    UnsubscribeRequest,
)
from tests.helpers import StanNode, wait_for
from tests.integration.harness import Clients, NodeStarter
from tests.integration.support import (
    INVALID_CLOSE_REQ,
    INVALID_CONN_REQ,
    INVALID_PUB_REQ,
    INVALID_SUB_REQ,
    INVALID_UNSUB_REQ,
    MISSING_CLIENT_ID,
    QUIET,
    UNKNOWN_CHANNEL,
    UNKNOWN_CLIENT,
    Collector,
    Inbox,
    Wire,
    channel_info,
    client_ids,
    hold_for,
    monitor,
    parse,
    sub_request,
    wait_until,
)

#: The channel with the messages that must survive.
KEEP = "keep"
KEPT = [f"kept-{i}".encode() for i in range(5)]
#: A client ID nobody uses: payloads that name it can do no harm if decoded.
INTRUDER = "intruder"

#: Bytes no protobuf decoder accepts.
GARBAGE: dict[str, bytes] = {
    "unterminated varint": b"\xff" * 11,
    "field number 0": b"\x00\x01",
    "end-group wire type": b"\x0c",
    "wire type 7": b"\x0f\x01",
    "length past the end": b"\x0a\x7fshort",
    "binary noise": bytes(range(256)),
}


def _truncated(payload: bytes, keep: int) -> bytes:
    """The first ``keep`` bytes: cut inside the first length-delimited field."""
    return payload[:keep]


#: Per subject kind: a message of that kind cut inside its first field.
TRUNCATED: dict[str, bytes] = {
    "discover": _truncated(
        ConnectRequest(clientID=INTRUDER, heartbeatInbox="_INBOX.hb").SerializeToString(), 5
    ),
    "pings": _truncated(Ping(connID=b"0123456789abcdefghijkl").SerializeToString(), 6),
    "pub": _truncated(PubMsg(clientID=INTRUDER, guid="g", subject=KEEP).SerializeToString(), 5),
    "sub": _truncated(sub_request(INTRUDER, KEEP).SerializeToString(), 5),
    "unsub": _truncated(
        UnsubscribeRequest(clientID=INTRUDER, subject=KEEP, inbox="x").SerializeToString(), 5
    ),
    "close": _truncated(CloseRequest(clientID=INTRUDER).SerializeToString(), 5),
    "ack": _truncated(Ack(subject=KEEP, sequence=1).SerializeToString(), 3),
}
TRUNCATED["subclose"] = TRUNCATED["unsub"]

#: A whole message of another type, with a known field of the wrong wire type.
WRONG_TYPE: dict[str, tuple[str, bytes]] = {
    # PubMsg.subject (3, bytes) lands on ConnectRequest.protocol (3, varint).
    "discover": (
        "PubMsg",
        PubMsg(clientID=INTRUDER, guid="_INBOX.g", subject=KEEP, data=b"d").SerializeToString(),
    ),
    # MsgProto.sequence (1, varint) lands on Ping.connID (1, bytes).
    "pings": ("MsgProto", MsgProto(sequence=1, subject=KEEP, data=b"d").SerializeToString()),
    # Ack.sequence (2, varint) lands on PubMsg.guid (2, bytes); Ack.subject (1, bytes)
    # on CtrlMsg.MsgType (1, varint), so it is no control message either.
    "pub": ("Ack", Ack(subject=INTRUDER, sequence=7).SerializeToString()),
    # PubMsg.data (5, bytes) lands on SubscriptionRequest.maxInFlight (5, varint).
    "sub": (
        "PubMsg",
        PubMsg(clientID=INTRUDER, guid="g", subject=KEEP, data=b"d").SerializeToString(),
    ),
    # MsgProto.sequence (1, varint) lands on UnsubscribeRequest.clientID (1, string).
    "unsub": ("MsgProto", MsgProto(sequence=1, subject=KEEP, data=b"d").SerializeToString()),
    "subclose": ("MsgProto", MsgProto(sequence=1, subject=KEEP, data=b"d").SerializeToString()),
    # MsgProto.sequence (1, varint) lands on CloseRequest.clientID (1, string).
    "close": ("MsgProto", MsgProto(sequence=1, subject=KEEP).SerializeToString()),
    # PubMsg.guid (2, bytes) lands on Ack.sequence (2, varint).
    "ack": ("PubMsg", PubMsg(clientID=KEEP, guid="g", subject=KEEP).SerializeToString()),
}

#: Expected answer per subject kind: (to an empty payload, to undecodable bytes).
#: None: no reply at all.
EXPECTED: dict[str, tuple[str | None, str | None]] = {
    "discover": (INVALID_CONN_REQ, INVALID_CONN_REQ),
    "pings": (None, None),
    "pub": (INVALID_PUB_REQ, INVALID_PUB_REQ),
    "sub": (MISSING_CLIENT_ID, INVALID_SUB_REQ),
    "unsub": (UNKNOWN_CHANNEL, INVALID_UNSUB_REQ),
    "subclose": (UNKNOWN_CHANNEL, INVALID_UNSUB_REQ),
    "close": (UNKNOWN_CLIENT, INVALID_CLOSE_REQ),
    "ack": (None, None),
}
KINDS = list(EXPECTED)


@dataclass
class Scene:
    """A node with stored messages, a client and a raw subscription with 5 unacked."""

    node: StanNode
    wire: Wire
    good: StanConnection
    ack_inbox: str
    deliveries: Inbox

    def subject(self, kind: str) -> str:
        s = self.wire.subjects
        return {
            "discover": s.discover,
            "pings": s.pings,
            "pub": f"{s.pub_prefix}.{KEEP}",
            "sub": s.sub,
            "unsub": s.unsub,
            "subclose": s.subclose,
            "close": s.close,
            "ack": self.ack_inbox,
        }[kind]


async def _scene(start_node: NodeStarter, clients: Clients) -> Scene:
    node = start_node()
    good = await clients.connect("good")
    for data in KEPT:
        await good.publish(KEEP, data)
    wire = await clients.wire()
    resp, _hb, _ = await wire.connect("rawsub")
    assert resp.error == ""
    deliveries = await Inbox(wire.nc).start()
    sub = await wire.subscribe(
        sub_request("rawsub", KEEP, deliveries.subject, start_position=4, ack_wait=30)
    )
    assert sub.error == ""
    await deliveries.wait_count(len(KEPT))
    return Scene(node, wire, good, sub.ackInbox, deliveries)


def _error_of(kind: str, raw: bytes) -> str:
    """The error text of a reply to a request of ``kind``; a refusal must carry
    nothing else (no subjects, no ack inbox, and no GUID since nothing was decoded)."""
    if kind == "discover":
        resp = parse(ConnectResponse, raw)
        if resp.pubPrefix:
            return f"<a successful connect: {resp.error!r}, pubPrefix {resp.pubPrefix!r}>"
        return resp.error
    if kind == "pings":
        return parse(PingResponse, raw).error
    if kind == "pub":
        ack = parse(PubAck, raw)
        if ack.guid:
            return f"<PubAck with GUID {ack.guid!r}: {ack.error!r}>"
        return ack.error
    if kind == "close":
        return parse(CloseResponse, raw).error
    resp_s = parse(SubscriptionResponse, raw)
    if resp_s.ackInbox:
        return f"<a subscription was created: {resp_s.ackInbox!r}>"
    return resp_s.error


async def _answer(scene: Scene, kind: str, payload: bytes, expect_reply: bool) -> bytes | None:
    """Send ``payload`` with a reply subject: the reply's payload, or None."""
    replies = await _answers(scene, kind, [payload], [expect_reply])
    return replies[0]


async def _answers(
    scene: Scene, kind: str, payloads: list[bytes], expect_reply: list[bool]
) -> list[bytes | None]:
    """Send every payload at once, each with its own reply subject. Wait (5 s at most)
    for the replies that should come, then QUIET seconds more for any that should not.
    Per payload: the single reply, or None if none came."""
    nc = scene.wire.nc
    inboxes = [await Inbox(nc).start() for _ in payloads]
    try:
        for inbox, payload in zip(inboxes, payloads, strict=True):
            await nc.publish(scene.subject(kind), payload, reply=inbox.subject)
        await nc.flush()
        awaited = [inbox for inbox, exp in zip(inboxes, expect_reply, strict=True) if exp]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not all(inbox.msgs for inbox in awaited) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        # A bounded watch for replies that must not come (or come twice).
        watch = QUIET if not all(expect_reply) else 0.1
        await hold_for(lambda: True, watch, "watching for unexpected replies")
        out: list[bytes | None] = []
        for inbox in inboxes:
            assert len(inbox.msgs) <= 1, f"{len(inbox.msgs)} replies to one request"
            out.append(bytes(inbox.msgs[0].data) if inbox.msgs else None)
        return out
    finally:
        for inbox in inboxes:
            await inbox.stop()


async def _still_serves(scene: Scene, clients: Clients) -> None:
    """Nothing changed but what the test did, and a full round trip works."""
    node, wire = scene.node, scene.wire
    assert node.running
    assert await client_ids(node) == {"good", "rawsub"}, "no client was added or removed"
    assert (await monitor(node, "/streaming/channelsz"))["names"] == [KEEP]
    info = await channel_info(node, KEEP)
    assert (info["msgs"], info["first_seq"], info["last_seq"]) == (len(KEPT), 1, len(KEPT))
    raw_sub = next(s for s in info["subscriptions"] if s["client_id"] == "rawsub")
    assert raw_sub["pending_count"] == len(KEPT), "nothing acked the raw subscription's messages"

    # A real ack on the ack inbox still works.
    for seq in range(1, len(KEPT) + 1):
        await wire.ack(scene.ack_inbox, KEEP, seq)

    async def acked() -> bool:
        info = await channel_info(node, KEEP)
        sub = next(s for s in info["subscriptions"] if s["client_id"] == "rawsub")
        return bool(sub["pending_count"] == 0)

    await wait_until(acked, 5, "real acks to clear the raw subscription")

    # Round trip through the client library; the old messages are intact.
    reader_conn = await clients.connect("reader")
    reader = Collector("reader")
    await reader_conn.subscribe(KEEP, reader.on_msg, start_at="first")
    await scene.good.publish(KEEP, b"after")
    await reader.wait_count(len(KEPT) + 1)
    assert reader.datas() == [*KEPT, b"after"]
    assert reader.seqs() == list(range(1, len(KEPT) + 2))
    await scene.deliveries.wait_count(len(KEPT) + 1)
    assert "Traceback" not in node.log_text(), "the node logged an exception"


async def _check_all(
    scene: Scene, kind: str, cases: list[tuple[str, bytes, str | None]]
) -> list[str]:
    """Send every case with a reply subject (answer checked) and without one."""
    wrong: list[str] = []
    replies = await _answers(
        scene,
        kind,
        [payload for _name, payload, _exp in cases],
        [exp is not None for _name, _payload, exp in cases],
    )
    for (name, payload, expected), raw in zip(cases, replies, strict=True):
        await scene.wire.send(scene.subject(kind), payload)  # and with no reply subject
        if raw is None:
            if expected is not None:
                wrong.append(f"{kind} <- {name}: expected {expected!r}, got no reply")
        elif expected is None:
            wrong.append(f"{kind} <- {name}: expected no reply, got {raw!r}")
        elif (got := _error_of(kind, raw)) != expected:
            wrong.append(f"{kind} <- {name}: expected {expected!r}, got {got!r}")
    return wrong


async def _report(wrong: list[str], scene: Scene, clients: Clients) -> None:
    """Fail with every wrong answer and, in any case, with what went wrong afterwards."""
    try:
        await _still_serves(scene, clients)
    except AssertionError as exc:
        wrong.append(f"afterwards: {exc}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("kind", KINDS)
async def test_empty_garbage_and_truncated_payloads(
    start_node: NodeStarter, clients: Clients, kind: str
) -> None:
    scene = await _scene(start_node, clients)
    on_empty, on_undecodable = EXPECTED[kind]
    cases: list[tuple[str, bytes, str | None]] = [("empty payload", b"", on_empty)]
    cases += [(name, payload, on_undecodable) for name, payload in GARBAGE.items()]
    cases.append(("truncated", TRUNCATED[kind], on_undecodable))
    wrong = await _check_all(scene, kind, cases)
    await _report(wrong, scene, clients)


@pytest.mark.parametrize("kind", KINDS)
async def test_message_of_the_wrong_type(
    start_node: NodeStarter, clients: Clients, kind: str
) -> None:
    scene = await _scene(start_node, clients)
    type_name, payload = WRONG_TYPE[kind]
    wrong = await _check_all(scene, kind, [(type_name, payload, EXPECTED[kind][1])])
    await _report(wrong, scene, clients)


async def test_control_message_on_the_publish_subject_is_ignored(
    start_node: NodeStarter, clients: Clients
) -> None:
    """A CtrlMsg from a legacy server fails to decode as a PubMsg (field 1 is a varint)
    and decodes as a CtrlMsg: it is ignored, no PubAck, nothing stored (§4.14, §6)."""
    scene = await _scene(start_node, clients)
    ctrl = CtrlMsg(
        MsgType=CtrlMsg.ConnClose, ServerID="legacy-server", Data=KEEP.encode(), RefID="r1"
    )
    raw = await _answer(scene, "pub", ctrl.SerializeToString(), expect_reply=False)
    assert raw is None, f"expected no PubAck, got {parse(PubAck, raw)}"
    await _still_serves(scene, clients)


async def test_client_id_with_invalid_utf8_is_an_invalid_client_id(
    start_node: NodeStarter, clients: Clients
) -> None:
    """The reference does not validate UTF-8 while decoding: the request decodes and the
    client ID then fails the client ID rule."""
    scene = await _scene(start_node, clients)
    raw = b"\x0a\x02\xff\xfe" + b"\x12\x09_INBOX.hb"
    reply = parse(ConnectResponse, await scene.wire.ask(scene.wire.subjects.discover, raw))
    assert reply.error == (
        "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed"
    )
    await _still_serves(scene, clients)


async def test_storm_of_malformed_input_then_the_node_still_serves(
    start_node: NodeStarter, clients: Clients
) -> None:
    """Everything above at once, as fast as it can be sent, with and without replies."""
    scene = await _scene(start_node, clients)
    payloads = [b"", *GARBAGE.values(), *TRUNCATED.values()]
    payloads += [p for _name, p in WRONG_TYPE.values()]
    nc = scene.wire.nc
    replies = await Inbox(nc).start()
    sent = 0
    for _round in range(5):
        for kind in KINDS:
            for payload in payloads:
                await nc.publish(scene.subject(kind), payload, reply=replies.subject)
                await nc.publish(scene.subject(kind), payload)
                sent += 2
    await nc.flush()
    # A request of ours is answered: the node keeps up.
    assert await scene.wire.ping(scene.good.conn_id) == b""
    assert sent == 5 * len(KINDS) * len(payloads) * 2
    await _still_serves_loosely(scene, clients)


async def _still_serves_loosely(scene: Scene, clients: Clients) -> None:
    """Like :func:`_still_serves`, for after a storm: the stored messages, the round
    trip and the two clients are checked, not the absence of other side effects."""
    node = scene.node
    assert node.running
    assert {"good", "rawsub"} <= await client_ids(node)
    reader_conn = await clients.connect("reader")
    reader = Collector("reader")
    await reader_conn.subscribe(KEEP, reader.on_msg, start_at="first")
    await scene.good.publish(KEEP, b"after the storm")
    await wait_for(
        lambda: b"after the storm" in reader.datas(), 5, "the message published after the storm"
    )
    assert reader.datas()[: len(KEPT)] == KEPT, "the messages stored before are intact"
    assert reader.seqs() == list(range(1, len(reader.msgs) + 1))
    assert "Traceback" not in node.log_text(), "the node logged an exception"
