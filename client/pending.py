"""Publishes waiting for their PubAck."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.nuid import NUID

from client.errors import CONNECTION_CLOSED, PUB_ACK_TIMEOUT, StanError
from protocol.messages import PubAck, decode

log = logging.getLogger(__name__)

#: ``ack_handler(guid, error)`` of ``publish_async``; ``error`` is "" on success.
AckHandler = Callable[[str, str], None]

#: (deadline on the loop clock, future or None, handler or None)
PendingAck = tuple[float, "asyncio.Future[str] | None", AckHandler | None]

_MAX_GUID_SEQ = 9_999_999_999


class Guids:
    """NUID-like GUIDs: a random 12-character base-62 prefix and a 10-digit counter.

    Unique per connection and, through the random prefix, across connections;
    much cheaper than a full NUID per message.
    """

    def __init__(self) -> None:
        self.prefix = ""
        self.seq = 0
        self.new_prefix()

    def new_prefix(self) -> None:
        self.prefix = NUID().next()[:12].decode()
        self.seq = 0

    def next(self) -> str:
        seq = self.seq = self.seq + 1
        if seq > _MAX_GUID_SEQ:
            self.new_prefix()
            seq = self.seq = 1
        return f"{self.prefix}{seq:010d}"


class PendingAcks:
    """Outstanding publishes by GUID, failed after ``ack_wait`` seconds.

    One loop timer serves all of them: ``ack_wait`` is fixed, so deadlines grow
    in insertion order and the oldest entries of the dict expire first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, ack_wait: float) -> None:
        self.ack_wait = ack_wait
        self.entries: dict[str, PendingAck] = {}
        self.closed = False
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self, guid: str, future: asyncio.Future[str] | None, handler: AckHandler | None
    ) -> None:
        deadline = self._loop.time() + self.ack_wait
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        self.entries[guid] = (deadline, future, handler)

    def discard(self, guid: str) -> None:
        self.entries.pop(guid, None)

    async def wait_for_room(self, limit: int) -> None:
        """Wait until fewer than ``limit`` publishes are outstanding."""
        room = self._room
        while len(self.entries) >= limit and not self.closed:
            room.clear()
            await room.wait()
        if self.closed:
            raise StanError(CONNECTION_CLOSED)

    def on_ack(self, payload: bytes) -> None:
        """Resolve the publish a PubAck payload is for (unknown GUIDs are ignored)."""
        ack = decode(PubAck, payload)
        if ack is None:
            return
        entry = self.entries.pop(ack.guid, None)
        if entry is None:
            return
        if not self._room.is_set():
            self._room.set()
        future = entry[1]
        if future is not None:
            if not future.done():
                if ack.error:
                    future.set_exception(StanError(ack.error))
                else:
                    future.set_result(ack.guid)
        else:
            self._call_handler(entry, ack.guid, ack.error)

    def fail_all(self, err: Exception) -> None:
        """Fail every outstanding publish with ``err``; later waits raise."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        entries, self.entries = self.entries, {}
        for guid, entry in entries.items():
            self._fail(guid, entry, err)
        self._room.set()

    def _expire(self) -> None:
        self._timer = None
        entries = self.entries
        now = self._loop.time()
        expired: list[str] = []
        for guid, entry in entries.items():
            if entry[0] > now:
                self._timer = self._loop.call_at(entry[0], self._expire)
                break
            expired.append(guid)
        if expired:
            for guid in expired:
                self._fail(guid, entries.pop(guid), StanError(PUB_ACK_TIMEOUT))
            self._room.set()

    def _fail(self, guid: str, entry: PendingAck, err: Exception) -> None:
        future = entry[1]
        if future is not None:
            if not future.done():
                future.set_exception(err)
        else:
            self._call_handler(entry, guid, str(err))

    @staticmethod
    def _call_handler(entry: PendingAck, guid: str, error: str) -> None:
        handler = entry[2]
        if handler is None:
            return
        try:
            handler(guid, error)
        except Exception:
            log.exception("ack handler failed guid=%s", guid)
