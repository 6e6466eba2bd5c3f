"""The node's outbox against a real nats-server: ``send_now`` writes a lone message
(a PubAck) straight to the socket with the installed nats-py, and never overtakes
messages queued before it."""

from __future__ import annotations

import asyncio

import nats

from cluster.outbox import Outbox
from tests.helpers import NatsServer


async def _receiver(
    url: str, subject: str, want: int
) -> tuple[nats.NATS, list[bytes], asyncio.Event]:
    nc = await nats.connect(url)
    got: list[bytes] = []
    done = asyncio.Event()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        got.append(msg.data)
        if len(got) >= want:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return nc, got, done


async def test_send_now_writes_directly_when_nothing_is_queued(nats_server: NatsServer) -> None:
    sender = await nats.connect(nats_server.url)
    rx, got, done = await _receiver(nats_server.url, "acks.direct", 1)
    try:
        outbox = Outbox(sender)
        outbox.send_now("acks.direct", b"ack-1")
        # Written without queueing: this nats-py still has the internals it uses.
        assert outbox.direct_writes == 1
        await asyncio.wait_for(done.wait(), 10)
        assert got == [b"ack-1"]
    finally:
        await sender.close()
        await rx.close()


async def test_send_now_keeps_the_order_of_queued_messages(nats_server: NatsServer) -> None:
    sender = await nats.connect(nats_server.url)
    rx, got, done = await _receiver(nats_server.url, "acks.order", 51)
    try:
        outbox = Outbox(sender)
        for i in range(50):
            outbox.send("acks.order", f"m{i}".encode())
        outbox.send_now("acks.order", b"last")  # queued behind the 50
        assert outbox.direct_writes == 0
        await asyncio.wait_for(done.wait(), 10)
        assert got == [f"m{i}".encode() for i in range(50)] + [b"last"]
    finally:
        await sender.close()
        await rx.close()
