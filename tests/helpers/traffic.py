"""Client-side traffic for cluster tests: a retrying synchronous publisher, a collecting
subscriber, a direct PING, and the checks of what a channel must hold afterwards."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors

from client import Msg, StanConnection, StanError, Subscription
from protocol.messages import Ping, PingResponse, decode

from .cluster import poll
from .waiting import wait_for

#: What a publish may fail with while there is no leader (SEMANTICS/CLUSTERING §4.3),
#: written out rather than imported so a changed constant shows up here.
ELECTION_ERRORS = frozenset(
    {
        "stan: publish ack timeout",
        "node is not the leader",
        "leadership lost while committing log",
        "timed out while committing log",
    }
)


@dataclass
class SyncPublisher:
    """Publishes ``<prefix><n>`` one at a time and waits for each ack.

    A publish that fails is retried with the same payload until it is acked, so
    a payload may be stored more than once (no de-duplication), but each one is
    acknowledged exactly once. ``acked`` lists payloads in order of their acks.
    """

    sc: StanConnection
    channel: str
    prefix: str = "m"
    #: Seconds to wait after a failed attempt before retrying.
    retry_pause: float = 0.02
    acked: list[bytes] = field(default_factory=list)
    #: time.monotonic() when the successful attempt of each acked payload was sent ...
    sent_times: list[float] = field(default_factory=list)
    #: ... and when its ack came back.
    ack_times: list[float] = field(default_factory=list)
    attempts: dict[bytes, int] = field(default_factory=dict)
    #: (time.monotonic(), error text) of every failed attempt.
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> SyncPublisher:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the message in progress (until acked), then return."""
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, timeout)

    async def __aenter__(self) -> SyncPublisher:
        return self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Stop normally; after an error in the block, just cancel the publishing."""
        if exc_type is None:
            await self.stop()
        elif self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            payload = f"{self.prefix}{n:07d}".encode()
            while True:
                self.attempts[payload] = self.attempts.get(payload, 0) + 1
                sent = time.monotonic()
                try:
                    await self.sc.publish(self.channel, payload)
                except StanError as exc:
                    self.failures.append((time.monotonic(), str(exc)))
                    if self.sc.closed:
                        raise  # connection lost: retrying cannot help
                    await asyncio.sleep(self.retry_pause)
                    continue
                self.acked.append(payload)
                self.sent_times.append(sent)
                self.ack_times.append(time.monotonic())
                break

    def first_ack_after(self, t: float) -> float | None:
        """When the first publish sent after monotonic time ``t`` was acknowledged
        (an ack that arrives after ``t`` for a publish sent before it does not count)."""
        i = bisect.bisect_left(self.sent_times, t)
        return self.ack_times[i] if i < len(self.ack_times) else None

    async def wait_acked(self, count: int, timeout: float, what: str) -> None:
        """Wait until ``count`` payloads have been acknowledged in all."""

        def enough() -> bool:
            return len(self.acked) >= count

        await wait_for(
            enough,
            timeout,
            f"{what} ({count} acknowledged publishes in all)",
            state=lambda: (len(self.acked), self.failures[-3:]),
        )

    async def wait_ack_after(self, t: float, timeout: float, what: str) -> float:
        """Wait for :meth:`first_ack_after` ``t`` and return it."""

        async def acked() -> float | None:
            return self.first_ack_after(t)

        return await poll(acked, timeout, what, state=lambda: self.failures[-3:])

    def unexpected_failures(self) -> list[str]:
        return [text for _, text in self.failures if text not in ELECTION_ERRORS]


class Collector:
    """Subscription callback that keeps every message, acking unless told not to."""

    def __init__(self, *, ack: bool = True) -> None:
        self.msgs: list[Msg] = []
        self.ack = ack

    async def __call__(self, msg: Msg) -> None:
        self.msgs.append(msg)
        if self.ack and msg.sub.manual_acks:
            await msg.ack()

    def seqs(self, redelivered: bool | None = None) -> list[int]:
        return [
            m.sequence for m in self.msgs if redelivered is None or m.redelivered == redelivered
        ]

    def describe(self, last: int = 30) -> str:
        tail = self.msgs[-last:]
        return f"{len(self.msgs)} messages, last {len(tail)}: " + ", ".join(
            f"{m.sequence}{'R' if m.redelivered else ''}" for m in tail
        )


async def read_channel(
    sc: StanConnection, channel: str, last_seq: int, timeout: float = 30.0
) -> list[Msg]:
    """Every message of ``channel`` up to ``last_seq``, through a new deliver-all
    subscription that is closed afterwards."""
    col = Collector()
    sub: Subscription = await sc.subscribe(
        channel, col, start_at="first", max_inflight=4096, ack_wait=30
    )
    try:
        await wait_for(
            lambda: any(m.sequence >= last_seq for m in col.msgs),
            timeout,
            f"a deliver-all subscriber on {channel!r} to reach sequence {last_seq}",
            interval=0.05,
            state=col.describe,
        )
    finally:
        await sub.unsubscribe()
    return col.msgs


def check_channel_content(
    msgs: Sequence[Msg],
    acked: Sequence[bytes],
    attempts: dict[bytes, int],
    what: str,
) -> None:
    """Assert what a deliver-all reader got against what a :class:`SyncPublisher` saw.

    * sequences run 1..N without gap or repeat, none flagged redelivered;
    * every acknowledged payload is there, in order of acknowledgement;
    * only payloads that were retried appear more than once, and nothing
      appears that was never published.
    """
    seqs = [m.sequence for m in msgs]
    assert seqs == list(range(1, len(seqs) + 1)), f"{what}: sequences with gaps: {_gaps(seqs)}"
    redelivered = [m.sequence for m in msgs if m.redelivered]
    assert not redelivered, f"{what}: first delivery flagged redelivered: {redelivered[:20]}"
    payloads = [m.data for m in msgs]
    strangers = [p for p in payloads if p not in attempts]
    assert not strangers, f"{what}: payloads never published: {strangers[:20]}"
    counts: dict[bytes, int] = {}
    for p in payloads:
        counts[p] = counts.get(p, 0) + 1
    dup_unretried = [p for p, n in counts.items() if n > 1 and attempts.get(p, 0) < 2]
    assert not dup_unretried, f"{what}: stored twice but published once: {dup_unretried[:20]}"
    # Acked payloads must be a subsequence of the stored ones (greedy match).
    pos = 0
    for i, p in enumerate(acked):
        while pos < len(payloads) and payloads[pos] != p:
            pos += 1
        if pos == len(payloads):
            where = [m.sequence for m in msgs if m.data == p]
            raise AssertionError(
                f"{what}: acknowledged message #{i} {p!r} "
                + (
                    f"is stored only before the previous acknowledged one (at {where})"
                    if where
                    else "is missing"
                )
                + f"; {len(acked)} acknowledged, {len(payloads)} stored"
            )
        pos += 1


def _gaps(seqs: Sequence[int]) -> str:
    out = []
    expected = 1
    for s in seqs:
        if s != expected:
            out.append(f"expected {expected} got {s}")
            if len(out) >= 10:
                break
        expected = s + 1
    return "; ".join(out) or "none"


async def ping(sc: StanConnection, timeout: float = 2.0) -> str:
    """Send one protocol PING for ``sc`` and return the server's error text ("" = OK).

    Raises ``nats.errors.TimeoutError`` when no node answers.
    """
    payload = Ping(connID=sc.conn_id).SerializeToString()
    reply = await sc.nc.request(sc.ping_requests, payload, timeout=timeout)
    if not reply.data:
        return ""
    resp = decode(PingResponse, reply.data)
    return "undecodable ping response" if resp is None else resp.error


async def wait_ping_ok(sc: StanConnection, timeout: float = 20.0) -> None:
    """Wait until a PING for ``sc`` is answered without error."""
    last: list[Any] = []

    async def ok() -> bool:
        try:
            err = await ping(sc, timeout=0.5)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            last[:] = [exc]
            return False
        last[:] = [err]
        return err == ""

    await poll(
        ok,
        timeout,
        f"a PING of client {sc.client_id!r} to be answered without error",
        state=lambda: last,
    )


async def probe_publish(
    sc: StanConnection, channel: str, tag: str, interval: float = 0.02, timeout: float = 30.0
) -> float:
    """Publish a probe every ``interval`` s, each waiting for its own ack, until one is
    acknowledged; return ``time.monotonic()`` of that first ack.

    Used right after killing a leader: the result minus the kill time is how long
    publishing was unavailable, to within ``interval``. Waits for every probe to
    settle (acked or timed out) before returning; they may fail only with
    :data:`ELECTION_ERRORS`.
    """
    loop = asyncio.get_running_loop()
    first: asyncio.Future[float] = loop.create_future()
    probes: list[asyncio.Future[str]] = []

    def on_done(fut: asyncio.Future[str]) -> None:
        if not fut.cancelled() and fut.exception() is None and not first.done():
            first.set_result(time.monotonic())

    async def send() -> None:
        n = 0
        while not first.done():
            n += 1
            fut = await sc.publish_async(channel, f"{tag}-{n}".encode())
            fut.add_done_callback(on_done)
            probes.append(fut)
            await asyncio.sleep(interval)

    sender = loop.create_task(send())
    try:
        acked_at = await asyncio.wait_for(asyncio.shield(first), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for a probe publish on {channel!r} "
            f"to be acknowledged ({len(probes)} sent)"
        ) from None
    finally:
        if not first.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        results = await asyncio.gather(*probes, return_exceptions=True)
    odd = [r for r in results if isinstance(r, BaseException) and str(r) not in ELECTION_ERRORS]
    assert not odd, f"probe publishes failed unexpectedly: {odd[:5]}"
    return acked_at
