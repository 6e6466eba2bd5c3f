"""Subscriptions and delivered messages."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import nats.errors
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription as NatsSubscription

from client.errors import (
    BAD_SUBSCRIPTION,
    CLOSE_REQ_TIMEOUT,
    CONNECTION_CLOSED,
    MANUAL_ACK,
    NO_SERVER_SUPPORT,
    UNSUB_REQ_TIMEOUT,
    StanError,
    undecodable,
)
from protocol.messages import (
    FIRST,
    LAST_RECEIVED,
    NEW_ONLY,
    SEQUENCE_START,
    TIME_DELTA_START,
    Ack,
    MsgProto,
    SubscriptionResponse,
    UnsubscribeRequest,
    decode,
)

if TYPE_CHECKING:
    from client.client import StanConnection

log = logging.getLogger(__name__)

StartAt = Literal["new_only", "last_received", "time_delta", "sequence", "first"]
MsgHandler = Callable[["Msg"], Awaitable[None] | None]

START_POSITIONS: dict[str, int] = {
    "new_only": NEW_ONLY,
    "last_received": LAST_RECEIVED,
    "time_delta": TIME_DELTA_START,
    "sequence": SEQUENCE_START,
    "first": FIRST,
}


def start_position(
    start_at: StartAt | int | None,
    *,
    start_sequence: int | None,
    start_time: datetime | float | None,
    start_time_delta: float | None,
    now_ns: int,
) -> tuple[int, int, int]:
    """``(startPosition, startSequence, startTimeDelta ns)`` of a subscription request.

    ``start_at`` names the position (or is the raw enum value, which is sent as
    is, valid or not). When it is None the position follows from whichever of
    ``start_sequence``, ``start_time`` (a datetime or Unix seconds) or
    ``start_time_delta`` (seconds before now) is given, else it is ``new_only``.
    """
    given = [
        name
        for name, value in (
            ("start_sequence", start_sequence),
            ("start_time", start_time),
            ("start_time_delta", start_time_delta),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"only one of {', '.join(given)} may be given")
    sequence = start_sequence or 0
    delta_ns = 0
    if start_time_delta is not None:
        delta_ns = int(start_time_delta * 1e9)
    elif start_time is not None:
        seconds = start_time.timestamp() if isinstance(start_time, datetime) else start_time
        delta_ns = now_ns - int(seconds * 1e9)

    if start_at is None:
        if start_sequence is not None:
            return SEQUENCE_START, sequence, 0
        if given:
            return TIME_DELTA_START, 0, delta_ns
        return NEW_ONLY, 0, 0
    if isinstance(start_at, str):
        try:
            position = START_POSITIONS[start_at]
        except KeyError:
            raise ValueError(f"unknown start position {start_at!r}") from None
    else:
        position = start_at
    if start_sequence is not None and position != SEQUENCE_START:
        raise ValueError("start_sequence needs start_at='sequence'")
    if given and start_sequence is None and position != TIME_DELTA_START:
        raise ValueError(f"{given[0]} needs start_at='time_delta'")
    return position, sequence, delta_ns


class Msg:
    """A delivered message (a decoded ``MsgProto``)."""

    __slots__ = (
        "sequence",
        "subject",
        "reply",
        "data",
        "timestamp",
        "redelivered",
        "redelivery_count",
        "crc32",
        "sub",
    )

    def __init__(self, sub: Subscription, proto: MsgProto) -> None:
        self.sub = sub
        self.sequence: int = proto.sequence
        #: The channel name.
        self.subject: str = proto.subject
        self.reply: str = proto.reply
        self.data: bytes = proto.data
        #: Unix nanoseconds, assigned by the server.
        self.timestamp: int = proto.timestamp
        self.redelivered: bool = proto.redelivered
        self.redelivery_count: int = proto.redeliveryCount
        self.crc32: int = proto.CRC32

    async def ack(self) -> None:
        """Acknowledge this message (subscriptions with ``manual_acks`` only)."""
        sub = self.sub
        if not sub.manual_acks:
            raise StanError(MANUAL_ACK)
        if sub.closed:
            raise StanError(BAD_SUBSCRIPTION)
        await sub.send_ack(self.subject, self.sequence)

    def __repr__(self) -> str:
        return (
            f"Msg(sequence={self.sequence}, subject={self.subject!r}, data={self.data!r}, "
            f"timestamp={self.timestamp}, redelivered={self.redelivered}, "
            f"redelivery_count={self.redelivery_count})"
        )


class Subscription:
    """One STAN subscription: its delivery inbox, ack inbox and callback.

    Created by ``StanConnection.subscribe``. Messages are handed to the callback
    one at a time, in arrival order; unless ``manual_acks`` is set, each is acked
    after the callback returns (not if it raised).
    """

    def __init__(
        self,
        conn: StanConnection,
        channel: str,
        cb: MsgHandler,
        *,
        inbox: str,
        queue: str,
        durable_name: str,
        max_inflight: int,
        ack_wait: int,
        manual_acks: bool,
    ) -> None:
        self.conn = conn
        self.channel = channel
        self.queue = queue
        self.durable_name = durable_name
        self.max_inflight = max_inflight
        #: Seconds.
        self.ack_wait = ack_wait
        self.manual_acks = manual_acks
        #: Where the server delivers (client generated).
        self.inbox = inbox
        #: Where acks go (server generated; set once the server accepted us).
        self.ack_inbox = ""
        self._cb = cb
        self._ready = asyncio.Event()
        self._closed = False
        self._nsub: NatsSubscription | None = None
        # The task nats-py runs our handler in, and what to do once the running
        # callback returns (a NATS unsubscribe asked for from inside it).
        self._cb_task: asyncio.Task[None] | None = None
        self._after_cb: Callable[[], Awaitable[object]] | None = None

    @property
    def closed(self) -> bool:
        """True once unsubscribed, closed, or its connection is closed."""
        return self._closed

    async def unsubscribe(self) -> None:
        """Remove the subscription on the server (durable state is deleted)."""
        await self._close_or_unsubscribe(close=False)

    async def close(self) -> None:
        """Close the subscription on the server (a durable stays, offline)."""
        await self._close_or_unsubscribe(close=True)

    async def send_ack(self, channel: str, sequence: int) -> None:
        payload = Ack(subject=channel, sequence=sequence).SerializeToString()
        await self.conn.nc.publish(self.ack_inbox, payload)

    async def start(self) -> None:
        """Subscribe (NATS) to the delivery inbox."""
        self._nsub = await self.conn.nc.subscribe(self.inbox, cb=self._on_msg)

    def accepted(self, ack_inbox: str) -> None:
        """The server accepted the subscription: start handing messages over."""
        self.ack_inbox = ack_inbox
        self._ready.set()

    async def stop(self) -> None:
        """Stop receiving; nothing is sent to the server."""
        self._closed = True
        self._ready.set()
        nsub, self._nsub = self._nsub, None
        if nsub is None:
            return
        current = asyncio.current_task()
        if current is not None and current is self._cb_task:
            # Unsubscribing cancels the task that runs the callback, i.e. the
            # caller: do it once the callback has returned.
            self._after_cb = nsub.unsubscribe
            self.conn.note_stopped_in_callback(current, self)
            return
        with suppress(nats.errors.Error):
            await nsub.unsubscribe()

    def run_after_callback(self, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn`` (instead of the NATS unsubscribe) when the running callback returns."""
        self._after_cb = fn

    async def _close_or_unsubscribe(self, *, close: bool) -> None:
        conn = self.conn
        if conn.closed:
            raise StanError(CONNECTION_CLOSED)
        if self._closed:
            raise StanError(BAD_SUBSCRIPTION)
        subject = conn.sub_close_requests if close else conn.unsub_requests
        if not subject:
            raise StanError(NO_SERVER_SUPPORT)
        self._closed = True
        conn.forget_subscription(self)
        request = UnsubscribeRequest(
            clientID=conn.client_id,
            subject=self.channel,
            inbox=self.ack_inbox,
            durableName=self.durable_name,
        ).SerializeToString()
        try:
            reply = await conn.nc.request(subject, request, timeout=conn.connect_timeout)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            raise StanError(CLOSE_REQ_TIMEOUT if close else UNSUB_REQ_TIMEOUT) from None
        finally:
            await self.stop()
        response = decode(SubscriptionResponse, reply.data)
        if response is None:
            raise StanError(undecodable("unsubscribe response"))
        if response.error:
            raise StanError(response.error)

    async def _on_msg(self, raw: NatsMsg) -> None:
        if not self._ready.is_set():
            # The first messages can overtake the subscription response.
            await self._ready.wait()
        if self._closed:
            return
        proto = decode(MsgProto, raw.data)
        if proto is None:
            return
        self._cb_task = asyncio.current_task()
        ok = False
        try:
            result = self._cb(Msg(self, proto))
            if result is not None and inspect.isawaitable(result):
                await result
            ok = True
        except Exception:
            log.exception(
                "subscription callback failed channel=%s sequence=%d", self.channel, proto.sequence
            )
        after = self._after_cb
        if after is not None:
            self._after_cb = None
            self.conn.callback_returned(self._cb_task)
            with suppress(nats.errors.Error):
                await after()  # may cancel this task: nothing may follow
            return
        if ok and not self.manual_acks and not self._closed:
            with suppress(nats.errors.ConnectionClosedError):
                await self.send_ack(proto.subject, proto.sequence)

    def __repr__(self) -> str:
        return (
            f"Subscription(channel={self.channel!r}, queue={self.queue!r}, "
            f"durable_name={self.durable_name!r}, inbox={self.inbox!r}, closed={self._closed})"
        )
