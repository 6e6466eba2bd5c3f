"""The Raft connections' send path (``cluster.raft_node``): messages larger
than the socket takes pile up in a send buffer that must go out whole, in
order, without further sends, and without being copied on every message."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pysyncobj.pickle as pso_pickle
import pytest
from pysyncobj.tcp_connection import TcpConnection

import cluster.raft_node  # noqa: F401 - installs the send path under test
from cluster.raft_io import LoopPoller, StoredZlib


def _frames(buf: bytearray) -> list[Any]:
    """Whole frames at the start of ``buf`` (removed from it), decoded."""
    out = []
    while len(buf) >= 4:
        (size,) = struct.unpack_from("i", buf)
        if len(buf) < 4 + size:
            break
        out.append(pso_pickle.loads(StoredZlib.decompress(bytes(buf[4 : 4 + size]))))
        del buf[: 4 + size]
    return out


def _drain(poller: LoopPoller, peer: socket.socket, want: int, timeout: float = 20.0) -> list[Any]:
    """Run the poller (nothing else sends) and read the peer until ``want`` frames came."""
    got: list[Any] = []
    pending = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        poller.dispatch()
        try:
            pending += peer.recv(1 << 20)
        except BlockingIOError:
            time.sleep(0.001)
        got += _frames(pending)
    return got


@pytest.fixture
def link() -> Iterator[tuple[LoopPoller, TcpConnection, socket.socket]]:
    """A pysyncobj connection on one end of a socket pair, the raw peer on the other."""
    poller = LoopPoller()
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    conn = TcpConnection(poller, socket=ours, timeout=60.0)
    try:
        yield poller, conn, peer
    finally:
        conn.disconnect()
        peer.close()
        poller.close()


def test_a_backlog_goes_out_whole_in_order_without_further_sends(
    link: tuple[LoopPoller, TcpConnection, socket.socket],
) -> None:
    poller, conn, peer = link
    for burst in range(2):  # the second starts with the poller no longer watching writes
        messages = [{"burst": burst, "n": i, "blob": bytes([i % 251]) * 100_000} for i in range(40)]
        for message in messages:
            conn.send(message)
        assert conn.getSendBufferSize() > 0, "the socket took everything: no backlog"
        assert isinstance(conn._TcpConnection__writeBuffer, bytearray)
        got = _drain(poller, peer, len(messages))
        assert [(m["burst"], m["n"]) for m in got] == [(burst, i) for i in range(40)]
        assert got == messages
        assert conn.getSendBufferSize() == 0


def test_small_messages_go_out_at_once(
    link: tuple[LoopPoller, TcpConnection, socket.socket],
) -> None:
    _, conn, peer = link
    conn.send({"type": "append_entries", "entries": [(b"\x00cmd", 7, 2)]})
    assert conn.getSendBufferSize() == 0
    got = _frames(bytearray(peer.recv(1 << 16)))
    assert got == [{"type": "append_entries", "entries": [(b"\x00cmd", 7, 2)]}]
