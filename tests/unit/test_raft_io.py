"""The Raft transport's pieces that run without a cluster: the stored-zlib framing
every node speaks, and the epoll poller the event loop drives."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pysyncobj.poller import POLL_EVENT_TYPE

from cluster.raft_io import LoopPoller, StoredZlib, TickDriver
from store.api import StorageError
from tests.helpers import wait_for


@pytest.mark.parametrize("size", [0, 1, 300, 65535, 65536, 200_000, 1 << 20])
def test_stored_frames_are_zlib_streams_both_ways(size: int) -> None:
    data = os.urandom(size)
    framed = StoredZlib.compress(data)
    # Any zlib reads ours (a node of an older build, say) ...
    assert zlib.decompress(framed) == data
    assert StoredZlib.decompress(framed) == data
    # ... and ours reads what zlib writes, compressed or not.
    for level in (0, 3, 9):
        assert StoredZlib.decompress(zlib.compress(data, level)) == data


@given(st.binary(max_size=2000))
def test_stored_frames_round_trip(data: bytes) -> None:
    assert StoredZlib.decompress(StoredZlib.compress(data)) == data


def test_damaged_stored_frames_are_refused() -> None:
    framed = bytearray(StoredZlib.compress(b"append entries" * 10))
    framed[20] ^= 0xFF  # payload byte: the checksum no longer matches
    with pytest.raises(zlib.error):
        StoredZlib.decompress(bytes(framed))
    with pytest.raises(zlib.error):
        StoredZlib.decompress(StoredZlib.compress(b"abc")[:-2])  # truncated


def test_poller_reports_read_write_and_tolerates_closed_descriptors() -> None:
    poller = LoopPoller()
    a, b = socket.socketpair()
    seen: list[tuple[int, int]] = []
    try:
        poller.subscribe(a.fileno(), lambda fd, ev: seen.append((fd, ev)), POLL_EVENT_TYPE.READ)
        assert poller.dispatch() == 0 and seen == []
        b.send(b"x")
        assert poller.dispatch() == 1
        assert seen == [(a.fileno(), POLL_EVENT_TYPE.READ)]
        # Subscribing again changes the mask (pysyncobj does this for writes).
        seen.clear()
        a.recv(1)
        poller.subscribe(
            a.fileno(),
            lambda fd, ev: seen.append((fd, ev)),
            POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE,
        )
        poller.dispatch()
        assert seen == [(a.fileno(), POLL_EVENT_TYPE.WRITE)]
        # pysyncobj closes a socket before unsubscribing it.
        fd = a.fileno()
        a.close()
        poller.unsubscribe(fd)
        assert poller.dispatch() == 0
    finally:
        a.close()
        b.close()
        poller.close()


async def test_driver_ticks_on_events_on_request_and_on_time() -> None:
    loop = asyncio.get_running_loop()
    poller = LoopPoller()
    a, b = socket.socketpair()
    a.setblocking(False)
    ticks: list[str] = []
    received: list[bytes] = []
    poller.subscribe(a.fileno(), lambda fd, ev: received.append(a.recv(10)), POLL_EVENT_TYPE.READ)
    driver = TickDriver(loop, poller, lambda _t: ticks.append("tick"), period=0.02)
    driver.start()
    try:
        await wait_for(lambda: len(ticks) >= 1, 5, "the first tick at start")
        b.send(b"raft")
        await wait_for(lambda: received == [b"raft"], 5, "the socket event handled")
        count = len(ticks)
        driver.schedule()
        driver.schedule()  # coalesced with the one before
        await wait_for(lambda: len(ticks) > count, 5, "a tick after the request")
        count = len(ticks)
        await wait_for(lambda: len(ticks) >= count + 2, 5, "periodic ticks")
        driver.stop()
        stopped = len(ticks)
        driver.schedule()
        driver.run()
        assert len(ticks) == stopped, "a stopped driver ticked again"
    finally:
        driver.stop()
        a.close()
        b.close()
        poller.close()


async def test_driver_retries_a_failing_tick_and_reports_bugs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    poller = LoopPoller()
    failures = {"left": 3}
    ticks: list[str] = []

    def tick(_t: float) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise failures.get("exc", RuntimeError("bug in a tick"))  # type: ignore[misc]
        ticks.append("ok")

    driver = TickDriver(loop, poller, tick, period=0.01)
    caplog.set_level(logging.DEBUG, logger="stanchion.raft")
    driver.start()
    try:
        await wait_for(lambda: ticks, 5, "a tick that passes after retries")
        bugs = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(bugs) == 1 and "raft tick failed" in bugs[0].getMessage(), bugs
        # A storage failure is the state machine's to report: no error line here.
        caplog.clear()
        failures.update(left=2, exc=StorageError("disk full"))
        count = len(ticks)
        await wait_for(lambda: len(ticks) > count, 5, "a tick after the request")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        driver.stop()
        poller.close()
