"""Tools for the single-node tests: speaking the protocol by hand, collecting deliveries,
reading the monitoring endpoints without blocking the event loop.

The error texts are written out here, copied from PROTOCOL.md §7, rather than imported
from ``protocol.errors``: a test must fail if the server's constant drifts from the spec.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

import nats
import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.nuid import NUID

from client import Msg
from protocol.messages import (
    Ack,
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    Ping,
    PingResponse,
    PubAck,
    PubMsg,
    SubscriptionRequest,
    SubscriptionResponse,
    UnsubscribeRequest,
)
from protocol.subjects import Subjects
from tests.helpers import StanNode, wait_for

# -- the spec's texts (PROTOCOL.md §7), verbatim ----------------------------------------

INVALID_CONN_REQ = "stan: invalid connection request"
INVALID_CLIENT_ID = "stan: invalid clientID: only alphanumeric and `-` or `_` characters allowed"
CLIENT_ID_REGISTERED = "stan: clientID already registered"
INVALID_PUB_REQ = "stan: invalid publish request"
TOO_MANY_CHANNELS = "too many channels"
INVALID_SUB_REQ = "stan: invalid subscription request"
MISSING_CLIENT_ID = "stan: clientID missing"
INVALID_ACK_WAIT = "stan: invalid ack wait time, should be >= 1s"
INVALID_MAX_INFLIGHT = "stan: invalid MaxInflight, should be >= 1"
INVALID_START_POSITION = "stan: invalid start position"
INVALID_SUBJECT = "stan: invalid subject"
UNKNOWN_CLIENT = "stan: unknown clientID"
DURABLE_QUEUE_COLON = (
    "stan: durable name of a durable queue subscriber can't contain the character ':'"
)
DUPLICATE_DURABLE = "stan: duplicate durable registration"
TOO_MANY_SUBS = "too many subscriptions per channel"
INVALID_UNSUB_REQ = "stan: invalid unsubscribe request"
UNKNOWN_CHANNEL = "stan: unknown channel"
INVALID_SUB = "stan: invalid subscription"
INVALID_CLOSE_REQ = "stan: invalid close request"
CLIENT_REPLACED = "client has been replaced or is no longer registered"


def case_conflict(new: str, existing: str) -> str:
    """The reference's text (misspelling included) for names that differ only by case;
    the test names are plain ASCII, so Go's %q is just double quotes."""
    return (
        f'rejecting channel "{new}" because channel "{existing}" alreay exists '
        "(different cases not allowed)"
    )


#: Heartbeat settings that detect a dead client in about a second:
#: interval 200 ms, timeout 200 ms, closed after more than 2 failures.
FAST_HB = ("-hbi", "200ms", "-hbt", "200ms", "-hbf", "2")
#: Seconds to wait when showing that something does NOT happen.
QUIET = 0.5

_nuid = NUID()


def new_id(prefix: str = "") -> str:
    """A unique token usable in client IDs, inboxes and channel names."""
    return prefix + _nuid.next().decode()


M = TypeVar("M", bound=Message)


def parse(cls: type[M], raw: bytes) -> M:
    """Decode ``raw`` as ``cls`` (raises on bytes that are not that message)."""
    msg = cls()
    msg.ParseFromString(raw)
    return msg


# -- waiting ---------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
) -> None:
    """Poll the coroutine function ``check`` until it returns True; fail at the deadline.

    The async-predicate form of ``tests.helpers.wait_for``, typed for coroutines.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def hold_for(
    predicate: Callable[[], bool],
    seconds: float,
    what: str,
    *,
    state: Callable[[], object] | None = None,
) -> None:
    """Check ``predicate`` for ``seconds``; fail at the first moment it is false.

    This is how a test shows that something does not happen: it watches for a
    bounded time instead of sleeping once and looking afterwards. ``state()`` is
    shown when it fails.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds
    while True:
        if not predicate():
            shown = f"; state: {state()!r}" if state is not None else ""
            raise AssertionError(f"{what}: no longer true after {loop.time() - start:.2f}s{shown}")
        if loop.time() >= deadline:
            return
        await asyncio.sleep(0.02)


async def monitor(node: StanNode, path: str) -> dict[str, Any]:
    """GET a monitoring endpoint off the event loop (the node's HTTP server is local)."""
    return await asyncio.to_thread(node.monitor, path)


async def channel_info(node: StanNode, channel: str) -> dict[str, Any]:
    """``/streaming/channelsz?channel=<name>&subs=1``."""
    return await monitor(node, f"/streaming/channelsz?channel={channel}&subs=1")


async def client_ids(node: StanNode) -> set[str]:
    data = await monitor(node, "/streaming/clientsz")
    return {c["id"] for c in data.get("clients", [])}


# -- collecting deliveries -------------------------------------------------------------


class Collector:
    """A subscription callback that keeps every message it is handed.

    With the client's automatic acks each message is acked after ``on_msg``
    returns; with ``manual_acks=True`` the test acks through :meth:`ack`.
    """

    def __init__(self, name: str = "subscriber") -> None:
        self.name = name
        self.msgs: list[Msg] = []

    async def on_msg(self, msg: Msg) -> None:
        self.msgs.append(msg)

    def seqs(self) -> list[int]:
        return [m.sequence for m in self.msgs]

    def first_deliveries(self) -> list[int]:
        return [m.sequence for m in self.msgs if not m.redelivered]

    def redeliveries(self) -> list[Msg]:
        return [m for m in self.msgs if m.redelivered]

    def datas(self) -> list[bytes]:
        return [m.data for m in self.msgs]

    async def wait_count(self, count: int, timeout: float = 5.0) -> list[Msg]:
        await wait_for(
            lambda: len(self.msgs) >= count,
            timeout,
            f"{self.name} to receive {count} messages",
            state=self.seqs,
        )
        return self.msgs

    async def wait_seq(
        self, seq: int, timeout: float = 5.0, *, redelivered: bool | None = None
    ) -> Msg:
        """The first message with ``seq`` (and the given redelivered flag)."""

        def find() -> Msg | None:
            for m in self.msgs:
                if m.sequence == seq and (redelivered is None or m.redelivered == redelivered):
                    return m
            return None

        found = await wait_for(
            find,
            timeout,
            f"{self.name} to receive sequence {seq} (redelivered={redelivered})",
            state=lambda: [(m.sequence, m.redelivered) for m in self.msgs],
        )
        assert found is not None
        return found

    async def ack(self, *seqs: int) -> None:
        """Manual acks of the latest delivery of each of ``seqs``."""
        for seq in seqs:
            msg = next(m for m in reversed(self.msgs) if m.sequence == seq)
            await msg.ack()


# -- raw NATS ---------------------------------------------------------------------------


class Inbox:
    """A NATS subscription that keeps what arrives on one subject."""

    def __init__(self, nc: NatsClient, subject: str | None = None) -> None:
        self.nc = nc
        self.subject = subject or nc.new_inbox()
        self.msgs: list[NatsMsg] = []
        self._sub: NatsSubscription | None = None

    async def start(self) -> Inbox:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()
        return self

    async def _on_msg(self, msg: NatsMsg) -> None:
        self.msgs.append(msg)

    async def wait_count(self, count: int, timeout: float = 5.0) -> list[NatsMsg]:
        await wait_for(
            lambda: len(self.msgs) >= count,
            timeout,
            f"{count} messages on {self.subject}",
            state=lambda: len(self.msgs),
        )
        return self.msgs

    async def stop(self) -> None:
        if self._sub is not None:
            with suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None


class HeartbeatInbox:
    """A client's heartbeat inbox under the test's control.

    ``answering`` decides whether server heartbeats get a reply; ``skip_next``
    leaves that many requests unanswered first. Every request is counted, with
    its arrival time on the loop clock. :meth:`stop` unsubscribes, so the
    server's requests meet "no responders" at once.
    """

    def __init__(self, nc: NatsClient, subject: str | None = None) -> None:
        self.nc = nc
        self.subject = subject or nc.new_inbox()
        self.answering = True
        self.skip_next = 0
        self.requests = 0
        self.unanswered = 0
        self.arrivals: list[float] = []
        self._sub: NatsSubscription | None = None

    async def start(self) -> HeartbeatInbox:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()
        return self

    async def _on_msg(self, msg: NatsMsg) -> None:
        self.requests += 1
        self.arrivals.append(asyncio.get_running_loop().time())
        if self.skip_next > 0:
            self.skip_next -= 1
            self.unanswered += 1
        elif self.answering and msg.reply:
            await self.nc.publish(msg.reply, b"")
        else:
            self.unanswered += 1

    async def stop(self) -> None:
        if self._sub is not None:
            with suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            await self.nc.flush()
            self._sub = None


class Wire:
    """The STAN protocol spoken by hand over one nats-py connection."""

    def __init__(self, nc: NatsClient, cluster_id: str) -> None:
        self.nc = nc
        self.cluster_id = cluster_id
        self.subjects = Subjects.for_cluster(cluster_id)

    # -- generic ---------------------------------------------------------------------

    async def ask(self, subject: str, payload: bytes, timeout: float = 3.0) -> bytes:
        """Request/reply; the reply's payload."""
        reply = await self.nc.request(subject, payload, timeout=timeout)
        return bytes(reply.data)

    async def ask_unanswered(self, subject: str, payload: bytes, wait: float = QUIET) -> None:
        """Send with a reply subject and show that no reply comes within ``wait`` s."""
        inbox = await Inbox(self.nc).start()
        try:
            await self.nc.publish(subject, payload, reply=inbox.subject)
            await self.nc.flush()
            await hold_for(lambda: not inbox.msgs, wait, f"no reply to {subject}")
        finally:
            await inbox.stop()

    async def send(self, subject: str, payload: bytes, reply: str = "") -> None:
        await self.nc.publish(subject, payload, reply=reply)
        await self.nc.flush()

    # -- connect / ping / close -------------------------------------------------------

    async def connect(
        self,
        client_id: str,
        *,
        hb: HeartbeatInbox | None = None,
        protocol: int = 1,
        conn_id: bytes | None = None,
        ping_interval: int = 0,
        ping_max_out: int = 0,
        timeout: float = 3.0,
    ) -> tuple[ConnectResponse, HeartbeatInbox, bytes]:
        """Register ``client_id``; returns the response, the heartbeat inbox, the connID."""
        if hb is None:
            hb = await HeartbeatInbox(self.nc).start()
        req = ConnectRequest(clientID=client_id, heartbeatInbox=hb.subject)
        cid = b""
        if protocol >= 1:
            cid = conn_id if conn_id is not None else new_id().encode()
            req.protocol = protocol
            req.connID = cid
            req.pingInterval = ping_interval
            req.pingMaxOut = ping_max_out
        resp = parse(
            ConnectResponse,
            await self.ask(self.subjects.discover, req.SerializeToString(), timeout),
        )
        return resp, hb, cid

    async def ping(self, conn_id: bytes) -> bytes:
        return await self.ask(self.subjects.pings, Ping(connID=conn_id).SerializeToString())

    async def close(self, client_id: str) -> CloseResponse:
        raw = await self.ask(
            self.subjects.close, CloseRequest(clientID=client_id).SerializeToString()
        )
        return parse(CloseResponse, raw)

    # -- publish ----------------------------------------------------------------------

    async def publish(self, msg: PubMsg, *, nats_token: str = "x") -> PubAck:
        """Send ``msg`` to ``<pubPrefix>.<nats_token>`` and wait for its PubAck.

        The server takes the channel from ``msg.subject``; the NATS subject only
        has to be a valid one under the publish prefix.
        """
        raw = await self.ask(f"{self.subjects.pub_prefix}.{nats_token}", msg.SerializeToString())
        return parse(PubAck, raw)

    # -- subscriptions ------------------------------------------------------------------

    async def subscribe(self, req: SubscriptionRequest) -> SubscriptionResponse:
        raw = await self.ask(self.subjects.sub, req.SerializeToString())
        return parse(SubscriptionResponse, raw)

    async def unsubscribe(
        self, client_id: str, channel: str, inbox: str, *, close: bool = False
    ) -> SubscriptionResponse:
        subject = self.subjects.subclose if close else self.subjects.unsub
        req = UnsubscribeRequest(clientID=client_id, subject=channel, inbox=inbox)
        return parse(SubscriptionResponse, await self.ask(subject, req.SerializeToString()))

    async def ack(self, ack_inbox: str, channel: str, seq: int) -> None:
        await self.send(ack_inbox, Ack(subject=channel, sequence=seq).SerializeToString())


def sub_request(
    client_id: str,
    channel: str,
    inbox: str = "",
    *,
    queue: str = "",
    durable: str = "",
    max_inflight: int = 1024,
    ack_wait: int = 30,
    start_position: int = 0,
    start_sequence: int = 0,
    start_time_delta: int = 0,
) -> SubscriptionRequest:
    """A SubscriptionRequest with the Go client's defaults unless told otherwise."""
    return SubscriptionRequest(
        clientID=client_id,
        subject=channel,
        qGroup=queue,
        inbox=inbox or new_id("_INBOX."),
        maxInFlight=max_inflight,
        ackWaitInSecs=ack_wait,
        durableName=durable,
        startPosition=start_position,  # type: ignore[arg-type]
        startSequence=start_sequence,
        startTimeDelta=start_time_delta,
    )


def ping_error(payload: bytes) -> str:
    """The error of a PingResponse payload ("" = OK, also for a zero-length one)."""
    return parse(PingResponse, payload).error


async def open_nats(url: str) -> NatsClient:
    """A plain nats-py connection that fails fast if the server is missing."""
    return await nats.connect(
        servers=[url], connect_timeout=2, max_reconnect_attempts=1, reconnect_time_wait=0.1
    )
