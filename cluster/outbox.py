"""Ordered, batched sending to NATS from synchronous code.

Delivery and acknowledgement code runs in plain callbacks; it hands each
message to ``send`` and goes on. One drain task per burst publishes the queued
messages in order through nats-py, so no task is created per message.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from nats.aio.client import Client as NATS
from nats.protocol.command import pub_cmd

log = logging.getLogger("stanchion.outbox")


class Outbox:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._queue: deque[tuple[str, bytes]] = deque()
        self._task: asyncio.Task[None] | None = None
        #: Messages ``send_now`` wrote without queueing.
        self.direct_writes = 0
        #: A direct write was made in this loop turn: later ones queue.
        self._wrote_this_turn = False

    def send(self, subject: str, payload: bytes) -> None:
        self._queue.append((subject, payload))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    def send_now(self, subject: str, payload: bytes) -> None:
        """Write a latency-critical message (a PubAck, a delivery) to the
        connection's socket at once when nothing is queued before it, here or
        in nats-py's own buffer; otherwise queue it like ``send``. Only the
        first of a loop turn goes directly: the rest of a burst is queued
        behind it and written with one system call at the end of the turn."""
        if self._wrote_this_turn or not self._write_direct(subject, payload):
            self.send(subject, payload)
            return
        self._wrote_this_turn = True
        asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self._wrote_this_turn = False

    def _write_direct(self, subject: str, payload: bytes) -> bool:
        # nats-py internals (its pending buffer and stream writer): on a
        # version without them this declines and the message is queued.
        if self._task is not None or self._queue:
            return False
        nc = self.nc
        writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
        if (
            writer is None
            or not nc.is_connected
            or nc.is_draining_pubs
            or getattr(nc, "_pending", True)
            or writer.is_closing()
        ):
            return False
        try:
            writer.write(pub_cmd(subject, "", payload))
        except Exception:  # noqa: BLE001 - the queued path reports the problem
            return False
        nc.stats["out_msgs"] += 1
        nc.stats["out_bytes"] += len(payload)
        self.direct_writes += 1
        return True

    async def _drain(self) -> None:
        publish = self.nc.publish
        queue = self._queue
        try:
            while queue:
                subject, payload = queue.popleft()
                try:
                    await publish(subject, payload)
                except Exception as exc:  # noqa: BLE001 - one bad subject must not stop the rest
                    log.debug("could not send subject=%s err=%s", subject, exc)
        finally:
            self._task = None
            if queue:
                self._task = asyncio.get_running_loop().create_task(self._drain())

    async def drain(self) -> None:
        """Wait until everything queued so far was handed to the connection."""
        while self._task is not None:
            await asyncio.sleep(0.005)
        try:
            await self.nc.flush(timeout=2)
        except Exception:  # noqa: BLE001 - connection may be gone
            pass
