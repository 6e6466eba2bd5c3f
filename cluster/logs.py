"""Logging in the reference's format.

``[<pid>] <yyyy/mm/dd hh:mm:ss.uuuuuu> [INF] STREAM: <message>``; levels INF,
WRN, ERR, FTL, DBG, TRC; ``-T=false`` drops the time stamp. Messages carry
their context as ``key=value`` pairs.
"""

from __future__ import annotations

import logging
import os
import sys
import time

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


class ReferenceFormatter(logging.Formatter):
    def __init__(self, timestamps: bool = True) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "INF")
        msg = record.getMessage()
        if record.exc_info:
            msg = f"{msg}\n{self.formatException(record.exc_info)}"
        prefix = "STREAM: " if record.name.startswith("stanchion") else ""
        if self.timestamps:
            t = record.created
            stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(t))
            stamp += f".{int((t % 1) * 1_000_000):06d}"
            return f"[{self.pid}] {stamp} [{level}] {prefix}{msg}"
        return f"[{self.pid}] [{level}] {prefix}{msg}"


def setup(
    debug: bool = False, trace: bool = False, timestamps: bool = True, log_file: str = ""
) -> logging.Handler:
    """Configure the root logger; returns the handler (reopened on SIGUSR1)."""
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ReferenceFormatter(timestamps))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    level = TRACE if trace else logging.DEBUG if debug else logging.INFO
    logging.getLogger("stanchion").setLevel(level)
    return handler
