"""Logging in the reference's format, to stderr, a file, syslog or remote syslog.

``[<pid>] <yyyy/mm/dd hh:mm:ss.uuuuuu> [INF] STREAM: <message>``; levels INF,
WRN, ERR, FTL, DBG, TRC; ``-T=false`` drops the time stamp. Messages carry
their context as ``key=value`` pairs. A log file is reopened by ``reopen()``
(SIGUSR1, for logrotate). Syslog lines carry the level and message only: the
syslog daemon adds time, host and ``<name>[<pid>]``.

Also here: the startup lines operators grep for (store limits table, cluster
membership), in the reference's wording.
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import os
import socket
import sys
import time
from urllib.parse import urlsplit

from store.limits import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_MSGS,
    DEFAULT_MAX_SUBS,
    StoreLimits,
)

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    TRACE: "TRC",
    logging.DEBUG: "DBG",
    logging.INFO: "INF",
    logging.WARNING: "WRN",
    logging.ERROR: "ERR",
    logging.CRITICAL: "FTL",
}
#: Where ``-s`` sends syslog lines.
SYSLOG_SOCKET = "/dev/log"
DEFAULT_SYSLOG_NAME = "stanchion"

log = logging.getLogger("stanchion.cli")


def _level(record: logging.LogRecord) -> str:
    return _LEVELS.get(record.levelno, "INF")


def _prefix(record: logging.LogRecord) -> str:
    return "STREAM: " if record.name.startswith("stanchion") else ""


class ReferenceFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        if self.timestamps:
            t = record.created
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))
            stamp += f".{int((t % 1) * 1_000_000):06d}"
            return f"[{self.pid}] {stamp} [{_level(record)}] {_prefix(record)}{msg}"
        return f"[{self.pid}] [{_level(record)}] {_prefix(record)}{msg}"


class SyslogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{_level(record)}] {_prefix(record)}{record.getMessage()}"


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file can be closed and opened again (after rotation)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


_handlers: list[logging.Handler] = []


def syslog_address(url: str) -> tuple[tuple[str, int] | str, socket.SocketKind]:
    """``udp://host:514``, ``tcp://host:port`` or ``unix:///dev/log`` -> handler address."""
    parts = urlsplit(url if "://" in url else "udp://" + url)
    if parts.scheme == "unix":
        return parts.path, socket.SOCK_DGRAM
    if parts.scheme not in ("udp", "tcp"):
        raise ValueError(f'invalid remote syslog URL "{url}": use udp://, tcp:// or unix://')
    kind = socket.SOCK_DGRAM if parts.scheme == "udp" else socket.SOCK_STREAM
    return (parts.hostname or "127.0.0.1", parts.port or 514), kind


def setup(
    debug: bool = False,
    trace: bool = False,
    timestamps: bool = True,
    log_file: str = "",
    syslog: bool = False,
    remote_syslog: str = "",
    syslog_name: str = "",
) -> list[logging.Handler]:
    """Configure the root logger (``-SD``, ``-SV``, ``-T``, ``-l``, ``-s``, ``-r``)."""
    handlers: list[logging.Handler] = []
    ident = f"{syslog_name or DEFAULT_SYSLOG_NAME}[{os.getpid()}]: "
    if remote_syslog:
        address, kind = syslog_address(remote_syslog)
        handlers.append(logging.handlers.SysLogHandler(address=address, socktype=kind))
    elif syslog:
        if not os.path.exists(SYSLOG_SOCKET):
            raise ValueError(f"-s/--syslog: {SYSLOG_SOCKET} does not exist (no syslog daemon)")
        handlers.append(logging.handlers.SysLogHandler(address=SYSLOG_SOCKET))
    elif log_file:
        handlers.append(ReopenableFileHandler(log_file))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        if isinstance(handler, logging.handlers.SysLogHandler):
            handler.ident = ident
            handler.setFormatter(SyslogFormatter())
        else:
            handler.setFormatter(ReferenceFormatter(timestamps))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = TRACE if trace else logging.DEBUG if debug else logging.INFO
    logging.getLogger("stanchion").setLevel(level)
    _handlers[:] = handlers
    return handlers


def reopen() -> None:
    """Reopen the log file, if logging to one (SIGUSR1)."""
    for handler in _handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


# -- startup lines ---------------------------------------------------------------------------


def friendly_bytes(n: int) -> str:
    """``976.56 MB`` for 1024000000, as the reference prints sizes."""
    if n < 1024:
        return f"{n} B"
    exp = int(math.log(n) / math.log(1024))
    return f"{n / 1024**exp:.2f} {'KMGTPE'[exp - 1]}B"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``1h0m0s``, ``1m30s``, ``1.5s``, ``300ms``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    mins, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{mins}m{secs}s"
    if mins:
        return f"{sign}{mins}m{secs}s"
    return f"{sign}{secs}s"


def _trim(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _limit(value: int, default: int | None, kind: str) -> str:
    if value == 0:
        text = "unlimited"
    elif kind == "bytes":
        text = friendly_bytes(value)
    elif kind == "duration":
        text = go_duration(value)
    else:
        text = str(value)
    star = " *" if default is not None and value == default else ""
    return f"{text:>13}{star}"


def store_limits_lines(limits: StoreLimits) -> list[str]:
    """The store limits table; `` *`` marks a value equal to the default."""
    lines = [
        "---------- Store Limits ----------",
        f"Channels:        {_limit(limits.max_channels, DEFAULT_MAX_CHANNELS, 'count')}",
        "--------- Channels Limits --------",
    ]
    rows = (
        ("Subscriptions", "max_subs", "count", DEFAULT_MAX_SUBS),
        ("Messages     ", "max_msgs", "count", DEFAULT_MAX_MSGS),
        ("Bytes        ", "max_bytes", "bytes", DEFAULT_MAX_BYTES),
        ("Age          ", "max_age", "duration", 0),
        ("Inactivity   ", "max_inactivity", "duration", 0),
    )
    for label, attr, kind, default in rows:
        lines.append(f"  {label}: {_limit(getattr(limits, attr), default, kind)}")
    if limits.channels:
        lines.append("-------- List of Channels ---------")
        for name in sorted(limits.channels):
            lines.append(name)
            resolved = limits.resolve(name) if "*" not in name and ">" not in name else None
            over = limits.channels[name]
            for label, attr, kind, _default in rows:
                value = getattr(over, attr)
                if not value:
                    continue
                shown = getattr(resolved, attr) if resolved is not None else max(value, 0)
                lines.append(f"  {label}: {_limit(shown, None, kind)}")
        lines.append("-----------------------------------")
    lines.append("----------------------------------")
    return lines


def log_startup(
    limits: StoreLimits,
    *,
    clustered: bool,
    node_id: str = "",
    log_path: str = "",
    peers: dict[str, str] | None = None,
    notices: list[str] | None = None,
) -> None:
    """The reference's startup lines that the server module does not print itself."""
    log.info("Go version: python%s", sys.version.split()[0])
    log.info("Git commit: [not set]")
    for line in store_limits_lines(limits):
        log.info("%s", line)
    if clustered:
        log.info("Cluster Node ID : %s", node_id)
        log.info("Cluster Log Path: %s", log_path)
        log.info("Cluster known peers:")
        others = [n for n in sorted(peers or {}) if n != node_id]
        for i, peer in enumerate(others, 1):
            log.info('peer %d: "%s" address=%s', i, peer, (peers or {})[peer])
    for notice in notices or []:
        log.warning("%s", notice)
