"""The node's outbox against a real nats-server: ``send_now`` writes a lone message
(a PubAck) straight to the socket with the installed nats-py, and never overtakes
messages queued before it."""

from __future__ import annotations

import asyncio

import nats

from cluster.outbox import Outbox
from tests.helpers import NatsServer

#: What the sender publishes until the receiver's subscription shows it is live.
PROBE = b"probe"


async def _receiver(
    url: str, subject: str, want: int, sender: nats.NATS
) -> tuple[nats.NATS, list[bytes], asyncio.Event]:
    """A subscriber on ``subject`` collecting everything but probes; returns
    once a probe from ``sender`` came through. (A subscription confirmed by a
    flush can still miss, now and then, the first message another connection
    publishes right after it; this nats-server and nats-py do that with no
    part of ours involved.)"""
    nc = await nats.connect(url)
    got: list[bytes] = []
    done = asyncio.Event()
    live = asyncio.Event()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        if msg.data == PROBE:
            live.set()
            return
        got.append(msg.data)
        if len(got) >= want:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    deadline = asyncio.get_running_loop().time() + 10
    while not live.is_set():
        assert asyncio.get_running_loop().time() < deadline, "subscription never went live"
        await sender.publish(subject, PROBE)
        await sender.flush()
        try:
            await asyncio.wait_for(live.wait(), 0.2)
        except TimeoutError:
            pass
    await nc.flush()  # probes still on their way arrive before what follows
    return nc, got, done


async def test_send_now_writes_directly_when_nothing_is_queued(nats_server: NatsServer) -> None:
    sender = await nats.connect(nats_server.url)
    rx, got, done = await _receiver(nats_server.url, "acks.direct", 1, sender)
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
    rx, got, done = await _receiver(nats_server.url, "acks.order", 51, sender)
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


async def test_send_now_writes_one_directly_per_loop_turn(nats_server: NatsServer) -> None:
    sender = await nats.connect(nats_server.url)
    rx, got, done = await _receiver(nats_server.url, "acks.burst", 200, sender)
    try:
        outbox = Outbox(sender)
        for i in range(100):  # one loop turn: the first goes directly, the rest queue
            outbox.send_now("acks.burst", f"a{i}".encode())
        assert outbox.direct_writes == 1
        await outbox.drain()
        await asyncio.sleep(0)  # a new turn: a new burst starts with a direct write
        for i in range(100):
            outbox.send_now("acks.burst", f"b{i}".encode())
        assert outbox.direct_writes == 2
        await asyncio.wait_for(done.wait(), 10)
        expected = [f"a{i}".encode() for i in range(100)] + [f"b{i}".encode() for i in range(100)]
        assert got == expected
    finally:
        await sender.close()
        await rx.close()
