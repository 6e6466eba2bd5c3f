"""The raw limit of our parts: nats-py request/reply through the same nats-server.

A responder process (``python -m cluster.bench_raw URL SUBJECT``) answers each
request with a small reply, as a server answers a publish with a PubAck; the
suite measures requests with 1 and with 100 in flight against it. Server
figures divided by these ones compare between machines of different speed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from array import array

import nats
import nats.errors
from nats.aio.msg import Msg

from cluster.bench_stats import Latency, RawResult

#: What the responder logs once it is subscribed.
RESPONDER_READY = "responder ready"
#: The reply: about the size of a PubAck (a 22-character GUID, protobuf framed).
REPLY = b"\n\x16" + b"0" * 22
#: Seconds one request may take.
REQUEST_TIMEOUT = 5.0
#: Requests sent before measuring (connections, caches, JIT-free but warm).
WARMUP = 200


async def measure(
    url: str,
    subject: str,
    in_flight: int,
    count: int,
    payload_size: int = 128,
    time_limit: float = 60.0,
) -> RawResult:
    """``count`` requests with ``in_flight`` outstanding at a time (stops at ``time_limit`` s)."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        payload = bytes(payload_size)
        for _ in range(WARMUP):
            await nc.request(subject, payload, timeout=REQUEST_TIMEOUT)
        lat: array[float] = array("d")
        left = count
        errors = 0
        clock = time.monotonic
        start = clock()
        deadline = start + time_limit

        async def requester() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                t0 = clock()
                if t0 > deadline:
                    return
                try:
                    await nc.request(subject, payload, timeout=REQUEST_TIMEOUT)
                except nats.errors.TimeoutError:
                    errors += 1
                    continue
                lat.append(clock() - t0)

        await asyncio.gather(*(requester() for _ in range(in_flight)))
        seconds = clock() - start
        return RawResult(in_flight, len(lat), errors, seconds, Latency.of(lat))
    finally:
        await nc.close()


async def respond(url: str, subject: str) -> None:
    """Answer every request on ``subject`` with :data:`REPLY` until terminated."""
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=1)

    async def on_request(msg: Msg) -> None:
        await nc.publish(msg.reply, REPLY)

    await nc.subscribe(subject, cb=on_request)
    await nc.flush()
    print(RESPONDER_READY, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m cluster.bench_raw NATS_URL SUBJECT", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(respond(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
