"""Loopback ports for test servers. Tests only ever use 127.0.0.1."""

from __future__ import annotations

import random
import socket
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from :func:`listen_range`
    (picked at random: two tests asking at once rarely get the same one)."""
    lo, hi = listen_range()
    for _ in range(1000):
        port = random.randint(lo, hi)
        if bindable(port):
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def accepts_connections(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if something accepts a TCP connection on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
