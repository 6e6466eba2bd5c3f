"""pysyncobj's I/O, run by the node's asyncio event loop instead of a thread.

pysyncobj normally runs a "tick thread": it waits on its sockets, handles the
messages, commits, applies and sends. Every publish then crosses threads twice
(the loop hands the command over, the tick thread hands the result back), and
each crossing costs a wake-up and a GIL hand-over, which on a busy two-core
machine is a good share of a commit's latency.

Here the loop does the ticking:

* ``LoopPoller`` is pysyncobj's poller interface over one ``epoll`` object.
  pysyncobj subscribes its sockets to it as usual; the loop watches the epoll
  descriptor itself (``add_reader``), which is readable whenever one of those
  sockets has an event.
* ``TickDriver`` runs a tick when that descriptor is readable, when a command
  was queued (``schedule``), and every ``period`` seconds for timers
  (heartbeats, election timeouts). A tick first hands the ready events to
  pysyncobj, then runs its tick body; the poll at the end of pysyncobj's tick
  returns at once (events are taken at the start of the next run).

Everything pysyncobj does (its callbacks, the state machine's apply) therefore
happens on the loop thread, one step at a time, with no locking between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

from pysyncobj.poller import POLL_EVENT_TYPE, Poller

from store.api import StorageError

log = logging.getLogger("stanchion.raft")

_READ = POLL_EVENT_TYPE.READ
_WRITE = POLL_EVENT_TYPE.WRITE
_ERROR = POLL_EVENT_TYPE.ERROR


class LoopPoller(Poller):  # type: ignore[misc]
    """pysyncobj's poller over one level-triggered epoll object.

    ``poll`` (called by pysyncobj at the end of every tick) does nothing:
    ``dispatch`` hands the ready events over at the start of the next run.
    pysyncobj closes a socket before unsubscribing it (the kernel has already
    dropped it from the epoll set by then), and a new socket may reuse the
    number, so registration tolerates both orders.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[int, int], None]] = {}
        #: The epoll events each subscribed descriptor was registered with.
        self._events: dict[int, int] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def subscribe(self, descr: int, callback: Callable[[int, int], None], eventMask: int) -> None:  # noqa: N803
        events = 0
        if eventMask & _READ:
            events |= select.EPOLLIN
        if eventMask & _WRITE:
            events |= select.EPOLLOUT
        if eventMask & _ERROR:
            events |= select.EPOLLERR
        known = self._events.get(descr)
        if known == events and self._callbacks.get(descr) == callback:
            return  # (the same connection asking again: no system call)
        try:
            if known is None:
                self._epoll.register(descr, events)
            else:
                self._epoll.modify(descr, events)
        except FileExistsError:
            self._epoll.modify(descr, events)
        except FileNotFoundError:
            self._epoll.register(descr, events)
        self._events[descr] = events
        self._callbacks[descr] = callback

    def unsubscribe(self, descr: int) -> None:
        self._events.pop(descr, None)
        if self._callbacks.pop(descr, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(descr)

    def poll(self, timeout: float) -> None:
        """pysyncobj's end-of-tick wait: the event loop waits instead."""

    def dispatch(self) -> int:
        """Hand every ready event to its callback; return how many there were."""
        ready = self._epoll.poll(0)
        for descr, event in ready:
            callback = self._callbacks.get(descr)
            if callback is None:
                continue
            mask = 0
            if event & select.EPOLLIN:
                mask |= _READ
            if event & select.EPOLLOUT:
                mask |= _WRITE
            if event & (select.EPOLLERR | select.EPOLLHUP):
                mask |= _ERROR
            callback(descr, mask)
        return len(ready)

    def close(self) -> None:
        self._callbacks.clear()
        self._events.clear()
        self._epoll.close()


#: Seconds before a tick body that raised is run again.
RETRY_DELAY = 0.05


class TickDriver:
    """Runs a pysyncobj node's ticks on an asyncio loop (see the module text).

    ``tick`` is the node's tick body (``SyncObj._onTick``). An exception from
    it is retried after ``RETRY_DELAY`` (events are still taken meanwhile). A
    storage failure while applying (``StorageError``: the state machine has
    said why) is logged at debug level; anything else once per streak.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        poller: LoopPoller,
        tick: Callable[[float], Any],
        period: float,
    ) -> None:
        self.loop = loop
        self.poller = poller
        self._tick = tick
        self.period = period
        self._scheduled = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._failures = 0
        self._retry_after = 0.0

    def start(self) -> None:
        self.loop.add_reader(self.poller.fileno(), self._on_events)
        self._timer = self.loop.call_later(self.period, self._on_timer)
        self.schedule()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.poller.fileno())
        if self._timer is not None:
            self._timer.cancel()

    def schedule(self) -> None:
        """Run a tick soon (a command was queued); several calls make one run."""
        if not self._scheduled and not self._stopped:
            self._scheduled = True
            self.loop.call_soon(self.run)

    def _on_events(self) -> None:
        self.run()

    def _on_timer(self) -> None:
        if self._stopped:
            return
        self._timer = self.loop.call_later(self.period, self._on_timer)
        self.run()

    def run(self) -> None:
        self._scheduled = False
        if self._stopped:
            return
        try:
            self.poller.dispatch()
            if self._failures and time.monotonic() < self._retry_after:
                return
            self._tick(0.0)
            self._failures = 0
        except Exception as exc:  # noqa: BLE001 - the tick is retried; see the class text
            self._failures += 1
            # Wait a little so a failing apply does not spin the loop.
            self._retry_after = time.monotonic() + RETRY_DELAY
            if self._failures == 1 and not isinstance(exc, StorageError):
                # Not a full disk (the state machine reports those): a bug.
                log.exception("raft tick failed; retrying")
            else:
                log.debug("raft tick failed (attempt %d)", self._failures, exc_info=True)


class StoredZlib:
    """Stands in for ``zlib`` in pysyncobj's TCP transport.

    pysyncobj compresses every message at level 3, which costs the leader a
    good share of a core at high publish rates for no gain on a local network.
    Even level 0 is dear for small messages: zlib sets up a full compressor
    (about 60 µs here) to copy a few hundred bytes. ``compress`` writes the
    same zlib format directly, as stored (uncompressed) blocks, and
    ``decompress`` reads stored blocks directly; anything else (a peer that
    really compressed) goes through zlib, so every node reads every other.
    """

    error = zlib.error

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        view = memoryview(data)
        size = len(view)
        parts = [_ZLIB_HEADER]
        pos = 0
        while True:
            chunk = view[pos : pos + _STORED_MAX]
            pos += len(chunk)
            last = pos >= size
            parts.append(_STORED_HEAD.pack(1 if last else 0, len(chunk), len(chunk) ^ 0xFFFF))
            parts.append(chunk)
            if last:
                break
        parts.append(_ADLER.pack(zlib.adler32(data)))
        return b"".join(parts)

    @staticmethod
    def decompress(data: bytes) -> bytes:
        if data[:2] != _ZLIB_HEADER:
            return zlib.decompress(data)
        view = memoryview(data)
        end = len(view) - 4
        pos = 2
        parts = []
        while True:
            if pos + 5 > end:
                return zlib.decompress(data)
            head, length, inverse = _STORED_HEAD.unpack_from(view, pos)
            if head & 0b110 or length ^ inverse != 0xFFFF or pos + 5 + length > end:
                return zlib.decompress(data)  # not stored blocks (or damaged)
            parts.append(view[pos + 5 : pos + 5 + length])
            pos += 5 + length
            if head & 1:
                break
        out = b"".join(parts)
        if pos != end or _ADLER.unpack_from(view, end)[0] != zlib.adler32(out):
            raise zlib.error("stored zlib stream: bad length or checksum")
        return out


#: zlib header: deflate, 32 KB window, no dictionary, "fastest" (check bits valid).
_ZLIB_HEADER = b"\x78\x01"
_STORED_MAX = 0xFFFF
_STORED_HEAD = struct.Struct("<BHH")
_ADLER = struct.Struct(">I")
