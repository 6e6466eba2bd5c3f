"""Direct subscriptions against a real nats-server and the installed nats-py:
messages reach the handler as they are parsed, in order, a failing handler
does not stop the next messages, and unsubscribe and drain still work."""

from __future__ import annotations

import asyncio
import logging

import nats
import pytest
from nats.aio.msg import Msg

from cluster.nats_direct import is_direct, subscribe_direct
from tests.helpers import NatsServer, wait_for


async def _until_live(tx: nats.NATS, rx: nats.NATS, subject: str, got: list[bytes]) -> None:
    """Publish probes until one reaches ``got`` (then empty it): a subscription
    confirmed by a flush can still miss, now and then, the first message
    another connection publishes right after it (nats-server and nats-py)."""
    await rx.flush()

    async def arrived() -> bool:
        if not got:
            await tx.publish(subject, b"probe")
            await tx.flush()
            await asyncio.sleep(0.05)
        return bool(got)

    await wait_for(arrived, 10, "the subscription to go live")
    await rx.flush()
    got.clear()


async def test_messages_reach_the_handler_in_order(nats_server: NatsServer) -> None:
    rx = await nats.connect(nats_server.url)
    tx = await nats.connect(nats_server.url)
    got: list[bytes] = []
    try:
        sub = await subscribe_direct(rx, "direct.order", lambda m: got.append(m.data))
        # This nats-py still has the internals the hand-over replaces.
        assert is_direct(sub)
        await _until_live(tx, rx, "direct.order", got)
        for i in range(2000):
            await tx.publish("direct.order", str(i).encode())
        await tx.flush()
        await wait_for(lambda: len(got) >= 2000, 10, "2000 messages handled")
        assert got == [str(i).encode() for i in range(2000)]
        assert sub.pending_bytes == 0  # nothing left counted as queued
        await sub.unsubscribe()
        await tx.publish("direct.order", b"after")
        await tx.flush()
        await rx.flush()
        assert len(got) == 2000
    finally:
        await tx.close()
        await rx.close()


async def test_a_failing_handler_is_logged_and_the_next_messages_still_come(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    rx = await nats.connect(nats_server.url)
    got: list[bytes] = []

    def handler(msg: Msg) -> None:
        if msg.data == b"bad":
            raise ValueError("cannot handle this one")
        got.append(msg.data)

    try:
        with caplog.at_level(logging.ERROR, logger="stanchion.nats"):
            await subscribe_direct(rx, "direct.fail", handler)
            await rx.flush()
            for data in (b"one", b"bad", b"two"):
                await rx.publish("direct.fail", data)
            await rx.flush()
            await wait_for(lambda: len(got) >= 2, 10, "both good messages handled")
        assert got == [b"one", b"two"]
        assert "handler failed subject=direct.fail" in caplog.text
    finally:
        await rx.close()


async def test_drain_completes(nats_server: NatsServer) -> None:
    rx = await nats.connect(nats_server.url)
    got: list[bytes] = []
    try:
        sub = await subscribe_direct(rx, "direct.drain", lambda m: got.append(m.data))
        await rx.flush()
        await rx.publish("direct.drain", b"x")
        await rx.flush()
        await wait_for(lambda: got == [b"x"], 10, "the message handled")
        await asyncio.wait_for(sub.drain(), 5)
    finally:
        await rx.close()
