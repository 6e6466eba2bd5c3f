"""Loopback ports for test servers. Tests only ever use 127.0.0.1."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: Where the kernel takes the local ports of outgoing connections (Linux default).
_DEFAULT_EPHEMERAL = (32768, 60999)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (inclusive)."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return lo, hi


def listen_range() -> tuple[int, int]:
    """Ports to hand to test servers: outside the ephemeral range, so that no
    outgoing connection (of which the tests open thousands) can take a port
    between the moment it is found free and the moment its server binds it."""
    lo, hi = ephemeral_range()
    if lo - 1 >= 12_000:
        return 10_000, lo - 1
    return hi + 1, 65_535


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


#: Ports :func:`free_port` returned in this process: a server may take a moment
#: to bind its port, and meanwhile the port still looks free.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from :func:`listen_range`,
    never one returned before in this process (picked at random, so that test
    runs side by side rarely meet)."""
    lo, hi = listen_range()
    for _ in range(1000):
        port = random.randint(lo, hi)
        if claim([port]):
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def claim(ports: Iterable[int]) -> bool:
    """If every one of ``ports`` is free and was never handed out here, hand
    them out (as :func:`free_port` does) and return True; else False."""
    wanted = list(ports)
    if any(p in _handed_out for p in wanted) or not all(bindable(p) for p in wanted):
        return False
    _handed_out.update(wanted)
    return True


def accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if something accepts a TCP connection on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
