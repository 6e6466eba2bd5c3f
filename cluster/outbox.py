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

log = logging.getLogger("stanchion.outbox")


class Outbox:
    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._queue: deque[tuple[str, bytes]] = deque()
        self._task: asyncio.Task[None] | None = None

    def send(self, subject: str, payload: bytes) -> None:
        self._queue.append((subject, payload))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

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
