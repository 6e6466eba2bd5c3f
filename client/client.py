"""The STAN connection: connect, publish, subscribe, pings and close."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from datetime import datetime
from types import TracebackType
from typing import Any, overload

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.nuid import NUID

from client.errors import (
    CLOSE_REQ_TIMEOUT,
    CONNECT_TIMEOUT,
    CONNECTION_CLOSED,
    MAX_PINGS,
    SUB_REQ_TIMEOUT,
    StanError,
    undecodable,
)
from client.pending import AckHandler, Guids, PendingAcks
from client.subscription import MsgHandler, StartAt, Subscription, start_position
from protocol.messages import (
    CloseRequest,
    CloseResponse,
    ConnectRequest,
    ConnectResponse,
    Ping,
    PingResponse,
    PubMsg,
    SubscriptionRequest,
    SubscriptionResponse,
    UnsubscribeRequest,
    decode,
)
from protocol.subjects import DEFAULT_DISCOVER_PREFIX

log = logging.getLogger(__name__)

ConnLostHandler = Callable[["StanConnection", Exception], Awaitable[None] | None]

_NO_REPLY = (nats.errors.TimeoutError, nats.errors.NoRespondersError)


async def connect(
    cluster_id: str,
    client_id: str,
    *,
    nats_url: str | list[str] = "nats://127.0.0.1:4222",
    nc: NatsClient | None = None,
    connect_timeout: float = 2.0,
    pub_ack_wait: float = 30.0,
    max_pub_acks_inflight: int = 16384,
    ping_interval: int = 5,
    ping_max_out: int = 88,
    ping_interval_ms: int | None = None,
    discover_prefix: str = DEFAULT_DISCOVER_PREFIX,
    conn_lost_cb: ConnLostHandler | None = None,
    protocol: int = 1,
) -> StanConnection:
    """Connect to the streaming server with ``cluster_id`` as ``client_id``.

    ``nc``: an established NATS connection to use (left open by ``close()``);
    otherwise one is opened to ``nats_url`` and owned by the STAN connection.
    ``connect_timeout`` (s) also bounds the subscribe/unsubscribe/close
    requests. ``pub_ack_wait`` (s): how long a publish waits for its PubAck.
    ``ping_interval`` (s) and ``ping_max_out`` go to the server, which echoes
    them; ``ping_interval_ms`` (tests) times the local ping loop in
    milliseconds and sends the whole seconds, at least 1. ``conn_lost_cb`` is
    called when pings fail. ``protocol=0`` behaves as a legacy client: no
    connID, no pings.
    """
    owns_nc = nc is None
    if nc is None:
        nc = await _open_nats(nats_url, client_id, connect_timeout)
    conn = StanConnection(
        nc,
        owns_nc=owns_nc,
        cluster_id=cluster_id,
        client_id=client_id,
        conn_id=NUID().next().decode(),
        connect_timeout=connect_timeout,
        pub_ack_wait=pub_ack_wait,
        max_pub_acks_inflight=max_pub_acks_inflight,
        conn_lost_cb=conn_lost_cb,
    )
    try:
        await conn._connect(
            discover_subject=f"{discover_prefix}.{cluster_id}",
            protocol=protocol,
            ping_interval=ping_interval,
            ping_max_out=ping_max_out,
            ping_interval_ms=ping_interval_ms,
        )
    except BaseException:
        await conn._shutdown(StanError(CONNECTION_CLOSED))
        raise
    return conn


async def _open_nats(servers: str | list[str], name: str, timeout: float) -> NatsClient:
    async def error_cb(err: Exception) -> None:
        log.warning("nats error client_id=%s error=%r", name, err)

    # nats-py retries the *first* connect max_reconnect_attempts times, sleeping
    # reconnect_time_wait in between, so a missing server would take minutes to
    # report. Connect with one short retry, then allow unlimited reconnects.
    nc = await nats.connect(
        servers=servers,
        name=name,
        connect_timeout=math.ceil(timeout),
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        error_cb=error_cb,
    )
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 2
    return nc


class StanConnection:
    """A connected STAN client. Create with ``connect()``.

    Besides the API, the connection exposes what tests need to speak the
    protocol directly: ``nc`` (the NATS connection), ``client_id``,
    ``conn_id`` (bytes), and the subjects of the ConnectResponse.
    """

    def __init__(
        self,
        nc: NatsClient,
        *,
        owns_nc: bool,
        cluster_id: str,
        client_id: str,
        conn_id: str,
        connect_timeout: float,
        pub_ack_wait: float,
        max_pub_acks_inflight: int,
        conn_lost_cb: ConnLostHandler | None,
    ) -> None:
        self.nc = nc
        self.cluster_id = cluster_id
        self.client_id = client_id
        self.conn_id: bytes = conn_id.encode()
        self.connect_timeout = connect_timeout
        self.max_pub_acks_inflight = max_pub_acks_inflight
        # ConnectResponse fields.
        self.pub_prefix = ""
        self.sub_requests = ""
        self.unsub_requests = ""
        self.close_requests = ""
        self.sub_close_requests = ""
        self.ping_requests = ""
        self.ping_interval = 0
        self.ping_max_out = 0
        self.protocol = 0
        # Client-side subjects.
        self.heartbeat_inbox = ""
        self.ack_subject = ""
        self.ping_inbox = ""

        self._owns_nc = owns_nc
        self._conn_lost_cb = conn_lost_cb
        self._loop = asyncio.get_running_loop()
        self._nuid = NUID()
        self._closed = False
        self._pub_subject_prefix = ""
        self._pub_msg = PubMsg(clientID=client_id)  # reused by every publish
        self._guids = Guids()
        self._pending = PendingAcks(self._loop, pub_ack_wait)
        self._subs: dict[str, Subscription] = {}
        self._nsubs: list[NatsSubscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped_in_callback: dict[asyncio.Task[Any] | None, Subscription] = {}
        self._pings_out = 0

    # -- connection lifecycle -------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pub_ack_wait(self) -> float:
        """Seconds a publish waits for its ack (fixed at connect)."""
        return self._pending.ack_wait

    async def _connect(
        self,
        *,
        discover_subject: str,
        protocol: int,
        ping_interval: int,
        ping_max_out: int,
        ping_interval_ms: int | None,
    ) -> None:
        nc = self.nc
        self.heartbeat_inbox = nc.new_inbox()
        self._nsubs.append(await nc.subscribe(self.heartbeat_inbox, cb=self._on_heartbeat))
        self.ack_subject = f"_STAN.acks.{self._nuid.next().decode()}"
        self._nsubs.append(await nc.subscribe(self.ack_subject, cb=self._on_pub_ack))
        request = ConnectRequest(clientID=self.client_id, heartbeatInbox=self.heartbeat_inbox)
        if protocol >= 1:
            self.ping_inbox = nc.new_inbox()
            self._nsubs.append(await nc.subscribe(self.ping_inbox, cb=self._on_ping_response))
            if ping_interval_ms is not None:
                ping_interval = max(1, math.ceil(ping_interval_ms / 1000))
            request.protocol = protocol
            request.connID = self.conn_id
            request.pingInterval = ping_interval
            request.pingMaxOut = ping_max_out
            self._pub_msg.connID = self.conn_id
        try:
            reply = await nc.request(
                discover_subject, request.SerializeToString(), timeout=self.connect_timeout
            )
        except _NO_REPLY:
            raise StanError(CONNECT_TIMEOUT) from None
        response = decode(ConnectResponse, reply.data)
        if response is None:
            raise StanError(undecodable("connect response"))
        if response.error:
            raise StanError(response.error)
        self.pub_prefix = response.pubPrefix
        self.sub_requests = response.subRequests
        self.unsub_requests = response.unsubRequests
        self.close_requests = response.closeRequests
        self.sub_close_requests = response.subCloseRequests
        self.ping_requests = response.pingRequests
        self.ping_interval = response.pingInterval
        self.ping_max_out = response.pingMaxOut
        self.protocol = response.protocol
        self._pub_subject_prefix = self.pub_prefix + "."
        if response.protocol >= 1 and response.pingInterval != 0 and self.ping_inbox:
            interval = (
                ping_interval_ms / 1000 if ping_interval_ms is not None else response.pingInterval
            )
            payload = Ping(connID=self.conn_id).SerializeToString()
            self._spawn(self._ping_loop(interval, response.pingMaxOut, payload))

    async def close(self) -> None:
        """Close on the server, stop all subscriptions and (if owned) close NATS.

        Does nothing if already closed (also after the connection was lost).
        """
        if self._closed:
            return
        try:
            await self._stop(StanError(CONNECTION_CLOSED))
            request = CloseRequest(clientID=self.client_id).SerializeToString()
            try:
                reply = await self.nc.request(
                    self.close_requests, request, timeout=self.connect_timeout
                )
            except _NO_REPLY:
                raise StanError(CLOSE_REQ_TIMEOUT) from None
            response = decode(CloseResponse, reply.data)
            if response is None:
                raise StanError(undecodable("close response"))
            if response.error:
                raise StanError(response.error)
        finally:
            await self._close_nats()

    async def __aenter__(self) -> StanConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stop(self, err: Exception) -> None:
        """Mark closed, fail pending publishes with ``err``, stop every subscription."""
        self._closed = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self._pending.fail_all(err)
        subs = list(self._subs.values())
        self._subs.clear()
        for sub in subs:
            await sub.stop()
        nsubs, self._nsubs = self._nsubs, []
        for nsub in nsubs:
            with suppress(nats.errors.Error):
                await nsub.unsubscribe()

    async def _shutdown(self, err: Exception) -> None:
        await self._stop(err)
        await self._close_nats()

    async def _close_nats(self) -> None:
        if not self._owns_nc or self.nc.is_closed:
            return
        sub = self._stopped_in_callback.get(asyncio.current_task())
        if sub is not None:
            # nats-py's close() cancels the tasks that run subscription
            # callbacks, among them the caller's: close once it has returned.
            sub.run_after_callback(self._close_nats_in_background)
            return
        await self.nc.close()

    async def _close_nats_in_background(self) -> None:
        self._spawn(self.nc.close())

    def note_stopped_in_callback(self, task: asyncio.Task[Any], sub: Subscription) -> None:
        """``sub`` was stopped from inside its own callback, running in ``task``."""
        self._stopped_in_callback[task] = sub

    def callback_returned(self, task: asyncio.Task[Any] | None) -> None:
        self._stopped_in_callback.pop(task, None)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- heartbeats and pings -------------------------------------------------

    async def _on_heartbeat(self, msg: NatsMsg) -> None:
        if msg.reply:
            with suppress(nats.errors.Error):
                await self.nc.publish(msg.reply, b"")

    async def _ping_loop(self, interval: float, max_out: int, payload: bytes) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            if self._closed:
                return
            self._pings_out += 1
            if self._pings_out > max_out:
                self._connection_lost(StanError(MAX_PINGS))
                return
            try:
                await self.nc.publish(self.ping_requests, payload, reply=self.ping_inbox)
            except nats.errors.ConnectionClosedError as err:
                self._connection_lost(err)
                return
            except nats.errors.Error as err:  # e.g. buffer full while reconnecting
                log.debug("ping not sent client_id=%s error=%r", self.client_id, err)

    async def _on_ping_response(self, msg: NatsMsg) -> None:
        if msg.data:
            response = decode(PingResponse, msg.data)
            if response is None:
                return
            if response.error:
                self._connection_lost(StanError(response.error))
                return
        self._pings_out = 0

    def _connection_lost(self, err: Exception) -> None:
        if self._closed:
            return
        self._closed = True
        log.warning("connection lost client_id=%s error=%s", self.client_id, err)
        # Not awaited here: tearing down cancels the task we are called from.
        self._spawn(self._handle_connection_lost(err))

    async def _handle_connection_lost(self, err: Exception) -> None:
        await self._shutdown(err)
        cb = self._conn_lost_cb
        if cb is None:
            return
        try:
            result = cb(self, err)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("conn_lost_cb failed client_id=%s", self.client_id)

    # -- publishing -----------------------------------------------------------

    async def publish(self, channel: str, data: bytes) -> str:
        """Publish and wait for the server's ack; return the message GUID."""
        future = await self.publish_async(channel, data)
        return await future

    @overload
    async def publish_async(self, channel: str, data: bytes) -> asyncio.Future[str]: ...

    @overload
    async def publish_async(self, channel: str, data: bytes, ack_handler: AckHandler) -> str: ...

    async def publish_async(
        self, channel: str, data: bytes, ack_handler: AckHandler | None = None
    ) -> str | asyncio.Future[str]:
        """Publish without waiting for the ack.

        Without ``ack_handler``, return a future that resolves with the GUID or
        raises ``StanError``. With it, return the GUID and later call
        ``ack_handler(guid, error)`` (``error`` is "" on success) from the
        event loop. Blocks only while ``max_pub_acks_inflight`` acks are
        outstanding.
        """
        if self._closed:
            raise StanError(CONNECTION_CLOSED)
        pending = self._pending
        if len(pending.entries) >= self.max_pub_acks_inflight:
            await pending.wait_for_room(self.max_pub_acks_inflight)
        guid = self._guids.next()
        pub_msg = self._pub_msg
        pub_msg.guid = guid
        pub_msg.subject = channel
        pub_msg.data = data
        payload = pub_msg.SerializeToString()
        future: asyncio.Future[str] | None = None
        if ack_handler is None:
            future = self._loop.create_future()
        pending.add(guid, future, ack_handler)
        try:
            await self.nc.publish(self._pub_subject_prefix + channel, payload, self.ack_subject)
        except BaseException:
            pending.discard(guid)
            raise
        return guid if future is None else future

    async def _on_pub_ack(self, msg: NatsMsg) -> None:
        self._pending.on_ack(msg.data)

    # -- subscribing ----------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        cb: MsgHandler,
        *,
        queue: str = "",
        durable_name: str = "",
        start_at: StartAt | int | None = None,
        start_sequence: int | None = None,
        start_time: datetime | float | None = None,
        start_time_delta: float | None = None,
        max_inflight: int = 1024,
        ack_wait: int = 30,
        manual_acks: bool = False,
    ) -> Subscription:
        """Subscribe to ``channel``; ``cb(msg)`` (sync or async) gets each message.

        Start position: ``start_at`` is one of "new_only" (default),
        "last_received", "first", "sequence" (with ``start_sequence``),
        "time_delta" (with ``start_time_delta`` seconds before now, or
        ``start_time`` as datetime or Unix seconds), or a raw enum value. Giving
        only ``start_sequence``/``start_time``/``start_time_delta`` implies the
        position. ``ack_wait`` is in seconds. Values are sent as given; the
        server validates them.
        """
        if self._closed:
            raise StanError(CONNECTION_CLOSED)
        position, sequence, delta_ns = start_position(
            start_at,
            start_sequence=start_sequence,
            start_time=start_time,
            start_time_delta=start_time_delta,
            now_ns=time.time_ns(),
        )
        sub = Subscription(
            self,
            channel,
            cb,
            inbox=self.nc.new_inbox(),
            queue=queue,
            durable_name=durable_name,
            max_inflight=max_inflight,
            ack_wait=ack_wait,
            manual_acks=manual_acks,
        )
        await sub.start()
        self._subs[sub.inbox] = sub
        request = SubscriptionRequest(
            clientID=self.client_id,
            subject=channel,
            qGroup=queue,
            inbox=sub.inbox,
            maxInFlight=max_inflight,
            ackWaitInSecs=ack_wait,
            durableName=durable_name,
            startPosition=position,  # type: ignore[arg-type]
            startSequence=sequence,
            startTimeDelta=delta_ns,
        ).SerializeToString()
        try:
            reply = await self.nc.request(self.sub_requests, request, timeout=self.connect_timeout)
            response = decode(SubscriptionResponse, reply.data)
            if response is None:
                raise StanError(undecodable("subscription response"))
            if response.error:
                raise StanError(response.error)
        except BaseException as err:
            self.forget_subscription(sub)
            await sub.stop()
            if isinstance(err, nats.errors.TimeoutError) and self.sub_close_requests:
                # The server may have created it after all: close it by its inbox.
                cleanup = UnsubscribeRequest(
                    clientID=self.client_id, subject=channel, inbox=sub.inbox
                ).SerializeToString()
                with suppress(nats.errors.Error):
                    await self.nc.publish(self.sub_close_requests, cleanup)
            if isinstance(err, _NO_REPLY):
                raise StanError(SUB_REQ_TIMEOUT) from None
            raise
        sub.accepted(response.ackInbox)
        return sub

    def forget_subscription(self, sub: Subscription) -> None:
        self._subs.pop(sub.inbox, None)

    def __repr__(self) -> str:
        return (
            f"StanConnection(cluster_id={self.cluster_id!r}, client_id={self.client_id!r}, "
            f"closed={self._closed})"
        )
